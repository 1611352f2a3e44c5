//! Vaquero's control plane: the pure state engine (desired + observed +
//! `now` → actions), rollout policies, jobs, execution records, the `Store`
//! trait (memory, redb, etcd), leader election, and the server and agent
//! services.
//!
//! **Status:** skeleton. The crate exists so the workspace has its final
//! shape; the engine is built in its own issue.
