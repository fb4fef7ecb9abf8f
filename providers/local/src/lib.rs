//! The embedded local platform: files, SQLite, an in-process model server.
