"""`tp rag`: the knowledge base."""

from __future__ import annotations

from ..api import kb as api
from ._base import Parser, emit


def cmd_search(args) -> int:
    out = api.search(args.query, k=args.k, symbol=args.symbol, timeframe=args.timeframe, since=args.since,
                     kind=args.kind, answer=args.answer)
    hits = out["hits"]
    lines = [f"{n:>2}. {h['score']:.3f}  [{h['kind']}{' ' + h['symbol'] if h['symbol'] else ''}"
             f"{' ' + h['timeframe'] if h['timeframe'] else ''}] {h['text']}" for n, h in enumerate(hits, 1)] \
        or ["no match"]
    if args.answer:
        a = out["answer"]
        lines += ["", a["error"] if "error" in a else f"answer ({a['model']}): {a['answer']}"]
    emit(args, out, "\n".join(lines))
    return 0


def cmd_add(args) -> int:
    out = api.add_note(args.text, symbol=args.symbol, timeframe=args.timeframe, at=args.at, literal=args.literal)
    ids = out["ids"]
    emit(args, out, f"stored and embedded {len(ids)} document(s) (ids {', '.join(map(str, ids))}); searchable now, "
                    "in the index after the next sync")
    return 0


def cmd_sync(args) -> int:
    out = api.sync(rebuild=args.rebuild, since=args.since, symbols=args.symbols)
    made, embedded, idx = out["summaries"], out["embedded"], out["index"]
    emit(args, out, f"summaries: {made['inserted']} new, {made['replaced']} replaced, {made['unchanged']} unchanged; "
                    f"embedded {embedded['embedded']} ({embedded['docs_per_s'] or 0} docs/s); index "
                    + (f"v{idx['version']} ({idx['kind']}, {idx['count']} vectors, +{idx['added']} -{idx['removed']})"
                       if idx.get("version") else idx.get("reason", "unchanged")))
    return 0


def cmd_status(args) -> int:
    st = api.status()
    m = st["index"]
    emit(args, st, f"documents: {st['documents']} ({st['notes']} notes), {st['embedded']} embedded with "
                   f"{st['model']}; index: " + ("none yet (tp rag sync)" if m is None else
                                                f"v{m['version']} {m['kind']}, {m['count']} vectors, built "
                                                f"{m['built_at']}"))
    return 0


def register(sub, cmd) -> None:
    rg = sub.add_parser("rag", help="the knowledge base: period summaries and notes, searchable in plain words")
    rgs = rg.add_subparsers(dest="rag_command", required=True, parser_class=Parser)
    rq = rgs.add_parser("search", help="top-k documents for a query, filters applied before the cut")
    rq.add_argument("query")
    rq.add_argument("--symbol")
    rq.add_argument("--timeframe")
    rq.add_argument("--since", help="documents of periods ending at or after this date")
    rq.add_argument("--kind", choices=["summary", "note"])
    rq.add_argument("-k", type=int, default=10)
    rq.add_argument("--answer", action="store_true", help="also ask the LLM at OLLAMA_URL, given the documents")
    rq.add_argument("--json", action="store_true")
    rq.set_defaults(fn=cmd_search)
    ra = rgs.add_parser("add", help="add a note or news snippet (a file or the text itself), embedded at once")
    ra.add_argument("text", help="a text file's path, or the text")
    ra.add_argument("--symbol")
    ra.add_argument("--timeframe")
    ra.add_argument("--at", help="when the note was written (default now)")
    ra.add_argument("--literal", action="store_true", help="TEXT is the text even if a file has that name")
    ra.add_argument("--json", action="store_true")
    ra.set_defaults(fn=cmd_add)
    rsy = rgs.add_parser("sync", help="summarize new periods, embed new documents, update the index")
    rsy.add_argument("--rebuild", action="store_true", help="rebuild the index from the stored vectors")
    rsy.add_argument("--since", help="re-summarize every period from this date")
    rsy.add_argument("--symbols", help="comma-separated (default: every enabled symbol)")
    rsy.add_argument("--json", action="store_true")
    rsy.set_defaults(fn=cmd_sync)
    rst = rgs.add_parser("status", help="documents, embeddings and the current index version")
    rst.add_argument("--json", action="store_true")
    rst.set_defaults(fn=cmd_status)
