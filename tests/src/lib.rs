//! Helpers that find the services `tests/services/start.sh` started (from the environment
//! variables it exports) and give each test its own topic, table, bucket or namespace.
