//! One error type for a request on its way through the proxy, as pingora has: where it failed (the client, the
//! backend), whether it may be sent again, and the one mapping to the answer the client gets.

use super::answer::Answer;
use crate::marathon::address::Endpoint;
use crate::rules::table::Route;
use std::time::Duration;

/// Whose failure it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    Client,
    Backend,
}

/// Whether the request may go out again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing reached the backend: another backend may be tried.
    Yes,
    /// The backend may have acted on it.
    No,
    /// Only on a fresh connection, and only without a body: a reused connection the backend closed as it was
    /// written.
    IfReused,
}

#[derive(Debug)]
pub enum Error {
    /// The client closed or reset before its request was whole: nobody to answer.
    ClientGone,
    /// The client stopped sending its request body for the client timeout.
    ClientStalled(Duration),
    /// The request body's framing broke: the client's 400.
    BadBody(&'static str),
    /// The backend could not be reached (or a bodyless request's new connection died unanswered).
    Connect(String),
    /// A reused connection died before any response.
    Reused(String),
    /// The backend had the request and failed.
    Failed(String),
    /// No response within the backend timeout.
    Timeout(Duration),
}

impl Error {
    /// A connection that died before any response: on a reused connection the request may go again; a bodyless
    /// request's new connection is as good as a connect failure (a task dying with connections in its backlog).
    pub fn unanswered(reused: bool, bodyless: bool, why: String) -> Error {
        match (reused, bodyless) {
            (true, true) => Error::Reused(why),
            (false, true) => Error::Connect(format!("{why} (new connection, before any response)")),
            (_, false) => Error::Failed(why),
        }
    }

    pub fn blame(&self) -> Blame {
        match self {
            Error::ClientGone | Error::ClientStalled(_) | Error::BadBody(_) => Blame::Client,
            _ => Blame::Backend,
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            Error::Connect(_) => Retry::Yes,
            Error::Reused(_) => Retry::IfReused,
            _ => Retry::No,
        }
    }

    /// What the client gets, logged and counted; `None` when there is nobody to tell.
    pub(crate) fn answer(
        &self,
        route: Option<&Route>,
        backend: Option<&Endpoint>,
    ) -> Option<Answer> {
        let app = route.map_or("", |r| r.app_id.as_str());
        let rejected = |why: &str| {
            crate::metrics::metrics()
                .http_rejected
                .with_label_values(&[why])
                .inc()
        };
        let b = backend.map(Endpoint::to_string).unwrap_or_default();
        Some(match self {
            Error::ClientGone => return None,
            Error::ClientStalled(after) => {
                rejected("client_timeout");
                tracing::debug!(%app, timeout = ?after, "client stalled in its request body; cut off");
                Answer::body_timeout()
            }
            Error::BadBody(why) => {
                rejected("bad_chunked");
                tracing::debug!(%app, %why, "malformed request body");
                Answer::bad_request(&format!("malformed chunked request body ({why})"))
            }
            Error::Connect(e) | Error::Reused(e) | Error::Failed(e) => {
                tracing::warn!(backend = %b, %app, error = %e, "backend request failed");
                Answer::backend_failed(&b, e)
            }
            Error::Timeout(after) => {
                tracing::warn!(backend = %b, %app, timeout = ?after, "backend response timeout");
                Answer::backend_timeout(&b, *after)
            }
        })
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::ClientGone => f.write_str("client went away mid-request"),
            Error::ClientStalled(d) => write!(f, "client sent nothing for {d:?}"),
            Error::BadBody(why) => write!(f, "malformed request body: {why}"),
            Error::Connect(e) => write!(f, "connect failed: {e}"),
            Error::Reused(e) => write!(f, "reused connection failed: {e}"),
            Error::Failed(e) => write!(f, "backend failed: {e}"),
            Error::Timeout(d) => write!(f, "no response within {d:?}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blame_retry_and_answers() {
        let cases = [
            (Error::ClientGone, Blame::Client, Retry::No, None),
            (
                Error::ClientStalled(Duration::from_secs(1)),
                Blame::Client,
                Retry::No,
                Some(408),
            ),
            (Error::BadBody("x"), Blame::Client, Retry::No, Some(400)),
            (
                Error::Connect("refused".into()),
                Blame::Backend,
                Retry::Yes,
                Some(502),
            ),
            (
                Error::unanswered(true, true, "eof".into()),
                Blame::Backend,
                Retry::IfReused,
                Some(502),
            ),
            (
                Error::unanswered(false, true, "eof".into()),
                Blame::Backend,
                Retry::Yes,
                Some(502),
            ),
            (
                Error::unanswered(true, false, "eof".into()),
                Blame::Backend,
                Retry::No,
                Some(502),
            ),
            (
                Error::Timeout(Duration::from_secs(1)),
                Blame::Backend,
                Retry::No,
                Some(504),
            ),
        ];
        for (e, blame, retry, status) in cases {
            assert_eq!((e.blame(), e.retry()), (blame, retry), "{e}");
            assert_eq!(
                e.answer(None, None).map(|a| a.status.as_u16()),
                status,
                "{e}"
            );
        }
    }
}
