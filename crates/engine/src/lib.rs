//! Plan, apply, destroy and drift over a locked state; the lifecycle runner.
