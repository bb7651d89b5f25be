//! Every outcome of an attempt, mapped exhaustively to what happens next.
//!
//! The [`Reason`] is a small closed set: the same code goes to the log line,
//! the attempt log and (later) the metric label, so it never carries a URL,
//! an id or a raw status value.

use std::fmt;
use std::time::Duration;

/// Why an attempt ended the way it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// 2xx.
    Ok,
    /// 3xx: redirects are not followed (SPEC §3).
    Http3xx,
    Http4xx,
    /// 429 Too Many Requests.
    Http429,
    Http5xx,
    /// Any other status (1xx that never finished, out-of-range).
    HttpOther,
    /// No response head within the deadline.
    Timeout,
    /// The host name did not resolve.
    Dns,
    ConnectionRefused,
    ConnectionReset,
    /// Connecting failed otherwise (unreachable network, …).
    Connect,
    Tls,
    /// The receiver broke HTTP.
    Protocol,
    /// Every address of the host is in a forbidden range (SPEC §7).
    BlockedAddress,
    /// The stored URL (or the endpoint's stored options) cannot be
    /// requested.
    InvalidUrl,
    /// The egress proxy could not be reached or would not open the tunnel
    /// (SPEC §14): not the receiver's failure, so it leaves the
    /// endpoint's failure streak alone.
    Proxy,
    /// The endpoint's OAuth2 token could not be had (SPEC §14): its token
    /// endpoint failed, refused or answered nonsense.
    AuthToken,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Http3xx => "http_3xx",
            Reason::Http4xx => "http_4xx",
            Reason::Http429 => "http_429",
            Reason::Http5xx => "http_5xx",
            Reason::HttpOther => "http_other",
            Reason::Timeout => "timeout",
            Reason::Dns => "dns",
            Reason::ConnectionRefused => "connection_refused",
            Reason::ConnectionReset => "connection_reset",
            Reason::Connect => "connect",
            Reason::Tls => "tls",
            Reason::Protocol => "protocol",
            Reason::BlockedAddress => "blocked_address",
            Reason::InvalidUrl => "invalid_url",
            Reason::Proxy => "proxy",
            Reason::AuthToken => "auth_token",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again per the schedule; `retry_after` is what a 429/503 asked.
    Retry {
        reason: Reason,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help.
    Failed {
        reason: Reason,
    },
}

impl Verdict {
    pub fn reason(self) -> Reason {
        match self {
            Verdict::Delivered => Reason::Ok,
            Verdict::Retry { reason, .. } | Verdict::Failed { reason } => reason,
        }
    }
}

/// What the client observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// A response head with this status (and `Retry-After`, if any).
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No response: the failure's reason.
    NoResponse(Reason),
}

/// The one place that decides. Non-2xx answers are retried, as the JoggAI
/// documentation promises receivers; only failures that retrying cannot
/// mend (a blocked address, an unusable URL) end the delivery at once.
pub fn classify(observed: Observed) -> Verdict {
    match observed {
        Observed::Status {
            code: 200..=299, ..
        } => Verdict::Delivered,
        Observed::Status { code, retry_after } => {
            let reason = match code {
                300..=399 => Reason::Http3xx,
                429 => Reason::Http429,
                400..=499 => Reason::Http4xx,
                500..=599 => Reason::Http5xx,
                _ => Reason::HttpOther,
            };
            // Retry-After counts only where HTTP gives it that meaning.
            let retry_after = retry_after.filter(|_| code == 429 || code == 503);
            Verdict::Retry {
                reason,
                retry_after,
            }
        }
        Observed::NoResponse(reason @ (Reason::BlockedAddress | Reason::InvalidUrl)) => {
            Verdict::Failed { reason }
        }
        Observed::NoResponse(reason) => Verdict::Retry {
            reason,
            retry_after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Verdict {
        classify(Observed::Status {
            code,
            retry_after: Some(Duration::from_secs(60)),
        })
    }

    #[test]
    fn only_2xx_delivers() {
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(status(code), Verdict::Delivered, "{code}");
        }
    }

    #[test]
    fn every_other_status_is_retried_with_its_class() {
        let cases = [
            (301, Reason::Http3xx),
            (302, Reason::Http3xx),
            (400, Reason::Http4xx),
            (404, Reason::Http4xx),
            (410, Reason::Http4xx),
            (429, Reason::Http429),
            (500, Reason::Http5xx),
            (503, Reason::Http5xx),
            (100, Reason::HttpOther),
            (600, Reason::HttpOther),
        ];
        for (code, reason) in cases {
            assert!(
                matches!(status(code), Verdict::Retry { reason: r, .. } if r == reason),
                "{code}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_only_on_429_and_503() {
        let asked = Some(Duration::from_secs(60));
        assert_eq!(
            status(429),
            Verdict::Retry {
                reason: Reason::Http429,
                retry_after: asked
            }
        );
        assert_eq!(
            status(503),
            Verdict::Retry {
                reason: Reason::Http5xx,
                retry_after: asked
            }
        );
        assert_eq!(
            status(500),
            Verdict::Retry {
                reason: Reason::Http5xx,
                retry_after: None
            }
        );
    }

    #[test]
    fn a_proxy_failure_is_retried_and_named_as_the_store_knows_it() {
        assert_eq!(
            classify(Observed::NoResponse(Reason::Proxy)),
            Verdict::Retry {
                reason: Reason::Proxy,
                retry_after: None
            }
        );
        // The store leaves the failure streak alone for this reason.
        assert_eq!(Reason::Proxy.as_str(), webhookd_store::AttemptRecord::PROXY);
    }

    #[test]
    fn transport_failures_retry_but_blocked_and_invalid_urls_fail_at_once() {
        for reason in [
            Reason::Timeout,
            Reason::Dns,
            Reason::ConnectionRefused,
            Reason::ConnectionReset,
            Reason::Connect,
            Reason::Tls,
            Reason::Protocol,
            Reason::AuthToken,
        ] {
            assert_eq!(
                classify(Observed::NoResponse(reason)),
                Verdict::Retry {
                    reason,
                    retry_after: None
                }
            );
        }
        for reason in [Reason::BlockedAddress, Reason::InvalidUrl] {
            assert_eq!(
                classify(Observed::NoResponse(reason)),
                Verdict::Failed { reason }
            );
        }
    }
}
