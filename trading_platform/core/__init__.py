"""Pure logic: no Dagster, no database. Tested on its own."""
