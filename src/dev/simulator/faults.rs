//! Fault injection: what the tests do to the simulated Marathon (`sim-faults` feature).

use super::state::{RequestLog, Simulator};

impl Simulator {
    /// Every request answers this status (e.g. 503 for "no leader"); `None` restores service.
    pub fn fail_with(&self, status: Option<u16>) {
        self.lock().fail_status = status;
        if status.is_some() {
            self.drop_streams();
        }
    }

    /// Built-in basic auth, as `--http_credentials`.
    pub fn require_auth(&self, user: &str, password: &str) {
        self.lock().credentials = Some((user.into(), password.into()));
    }

    /// Answer `/v2/events` with a 302 to another Marathon (a 1.7+ standby).
    pub fn redirect_events_to(&self, leader: Option<String>) {
        self.lock().redirect_events_to = leader;
    }

    /// Closes every open event stream (a leader change, a network cut).
    pub fn drop_streams(&self) {
        self.inner.generation.send_modify(|g| *g += 1);
    }

    /// Keeps streams open but sends nothing, not even keep-alives (a half-open connection).
    pub fn stall_streams(&self, stalled: bool) {
        self.lock().stalled = stalled;
    }

    /// A Marathon restart: subscriptions are lost, streams drop.
    pub fn restart(&self) {
        self.lock().subscribers.clear();
        self.drop_streams();
    }

    pub fn subscribers(&self) -> Vec<String> {
        self.lock().subscribers.iter().cloned().collect()
    }

    pub fn requests(&self) -> Vec<RequestLog> {
        self.lock().requests.clone()
    }

    pub fn open_streams(&self) -> usize {
        self.inner.events.receiver_count()
    }

    /// The task's server dies but Marathon has not noticed yet (no event, still listed as running).
    pub fn crash_task_server(&self, task_id: &str) {
        if let Some(h) = self.lock().task_servers.remove(task_id) {
            h.abort();
        }
    }
}
