//! Alert state and the delivery outbox. Instances (one per condition) move pending -> firing -> resolved;
//! incidents (`alerts`, one open per group) are opened, re-triggered and resolved together with their
//! deliveries, one outbox row per receiver, in one transaction: a crash can neither send a page for a state
//! that was never stored nor lose one. Also user rules, silences, webhook receivers and the metric reads
//! the rules evaluate.
//!
//! One module per aggregate; everything is re-exported here, so callers keep `db::alerts::...`.

mod incidents;
mod instances;
mod outbox;
mod rules;
mod signals;
mod silences;
mod webhooks;

pub use incidents::*;
pub use instances::*;
pub use outbox::*;
pub use rules::*;
pub use signals::*;
pub use silences::*;
pub use webhooks::*;

/// Whether `e` is a unique-constraint violation (a name already taken).
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}
