//! How a write of a group learns its outcome: its own result, delivered once the group's
//! commit is known. Shared by the writer's loop and the set-based writes it runs.

use tokio::sync::oneshot;

use super::StoreError;

/// A write's outcome, waiting for the commit of its group.
pub(super) type Deliver = Box<dyn FnOnce(&Result<(), String>) + Send>;

/// The delivery of `result` to `reply` once the group's commit is known: a write that
/// failed on its own keeps its own error; any other gets the commit's.
pub(super) fn deliver<T: Send + 'static>(
    result: Result<T, StoreError>,
    reply: oneshot::Sender<Result<T, StoreError>>,
) -> Deliver {
    Box::new(move |commit: &Result<(), String>| {
        let outcome = match commit {
            Ok(()) => result,
            Err(_) if result.is_err() => result,
            Err(e) => Err(StoreError::GroupCommit(e.clone())),
        };
        let _ = reply.send(outcome);
    })
}
