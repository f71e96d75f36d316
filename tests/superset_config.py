import os

SECRET_KEY = "sqlmpc-superset-check-not-secret-0123456789abcdef"
# The metastore: a throw-away SQLite file (tests/test_superset.py gives each run its own).
SQLALCHEMY_DATABASE_URI = "sqlite:///" + os.environ.get("SQLMPC_SUPERSET_DB", "/tmp/sqlmpc-superset-check.db")
# The metastore cache of this Superset release does not accept the installed Flask-Caching's arguments.
CACHE_CONFIG = DATA_CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache"}
FILTER_STATE_CACHE_CONFIG = EXPLORE_FORM_DATA_CACHE_CONFIG = {"CACHE_TYPE": "SimpleCache"}
