//! Where one request ends and the next begins on a keep-alive connection,
//! followed just far enough to know whether the start of a next request
//! head is already waiting when a response is done. hyper may have read
//! it together with the previous request (one TCP segment); no later read
//! would then start the head deadline, and a client could hold the
//! connection for the whole idle limit with half a head (security round 3).

/// Longest head followed; hyper refuses larger ones itself (431).
const MAX_HEAD: usize = 64 * 1024;

/// What the bytes read so far are in the middle of.
#[derive(Debug)]
pub(super) enum Framing {
    /// A request head: its bytes so far, and when (the connection's
    /// milliseconds) the first of them arrived.
    Head { bytes: Vec<u8>, since: Option<u64> },
    /// A `Content-Length` body: how many bytes are still to come.
    Body { remaining: u64 },
    /// A framing not followed (a chunked body, an oversized head): reads
    /// alone arm the head deadline from here on, as for any connection.
    Lost,
}

impl Default for Framing {
    fn default() -> Self {
        Framing::Head {
            bytes: Vec::new(),
            since: None,
        }
    }
}

impl Framing {
    /// Follows `data`, read at `now`. Body bytes are only counted; head
    /// bytes are kept until their blank line. (Recurses once per whole head
    /// in `data`: a few hundred at most in one read.)
    pub(super) fn feed(&mut self, mut data: &[u8], now: u64) {
        while !data.is_empty() {
            match self {
                Framing::Lost => return,
                Framing::Body { remaining } => {
                    let taken = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(data.len());
                    *remaining -= taken as u64;
                    data = &data[taken..];
                    if *remaining == 0 {
                        *self = Framing::default();
                    }
                }
                Framing::Head { bytes, since } => {
                    since.get_or_insert(now);
                    let searched_from = bytes.len().saturating_sub(3);
                    bytes.extend_from_slice(data);
                    let Some(end) = find_head_end(&bytes[searched_from..]) else {
                        if bytes.len() > MAX_HEAD {
                            *self = Framing::Lost;
                        }
                        return;
                    };
                    let after_head = bytes.split_off(searched_from + end);
                    *self = match body_length(bytes) {
                        Some(0) => Framing::default(),
                        Some(remaining) => Framing::Body { remaining },
                        None => Framing::Lost,
                    };
                    return self.feed(&after_head, now);
                }
            }
        }
    }

    /// When the bytes of a next request head began arriving, if some have
    /// (leading blank lines, which HTTP/1.1 allows between requests, aside).
    pub(super) fn head_waiting_since(&self) -> Option<u64> {
        match self {
            Framing::Head { bytes, since } if bytes.iter().any(|b| !b"\r\n".contains(b)) => *since,
            _ => None,
        }
    }
}

/// The index just past the blank line ending a head, if `bytes` holds it.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// The body length a head announces: `Some(0)` without one, `None` for a
/// framing not followed (`Transfer-Encoding`, an unreadable length).
fn body_length(head: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(head);
    let mut length = Some(0);
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        if name == "transfer-encoding" {
            return None;
        }
        if name == "content-length" {
            length = Some(value.trim().parse().ok()?);
        }
    }
    length
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_of_a_next_head_is_noticed_after_a_request_and_its_body() {
        let mut framing = Framing::default();
        framing.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 5);
        assert_eq!(
            framing.head_waiting_since(),
            None,
            "a whole request, nothing after it"
        );
        framing.feed(b"GET /hea", 7);
        assert_eq!(framing.head_waiting_since(), Some(7));

        let mut framing = Framing::default();
        framing.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel", 1);
        framing.feed(b"lo", 2);
        assert_eq!(framing.head_waiting_since(), None, "the body is not a head");
        framing.feed(b"\r\n", 3);
        assert_eq!(
            framing.head_waiting_since(),
            None,
            "blank lines between requests"
        );
        framing.feed(b"G", 4);
        assert_eq!(framing.head_waiting_since(), Some(3));

        let mut framing = Framing::default();
        framing.feed(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET",
            1,
        );
        assert_eq!(
            framing.head_waiting_since(),
            None,
            "chunked bodies are not followed"
        );
    }
}
