//! How far a long one-shot command has come (`keys rotate`, `recover`),
//! shown on stderr while it is a terminal: one line redrawn in place at
//! most every 100 ms, ended with a newline. Piped or redirected, nothing is
//! drawn — scripts read the result line on stdout alone.

use std::io::{IsTerminal as _, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use webhookd_store::Progress;

const REDRAW_EVERY: Duration = Duration::from_millis(100);

pub struct Meter<W: Write + Send> {
    /// What is counted: `users resealed`, `deliveries recovered`.
    counted: &'static str,
    out: Mutex<Drawn<W>>,
}

struct Drawn<W> {
    out: Option<W>,
    last: Option<Instant>,
}

impl Meter<std::io::Stderr> {
    /// A meter on stderr, drawing only when stderr is a terminal.
    pub fn on_stderr(counted: &'static str) -> Self {
        let stderr = std::io::stderr();
        let terminal = stderr.is_terminal();
        Meter::new(counted, terminal.then_some(stderr))
    }
}

impl<W: Write + Send> Meter<W> {
    /// A meter drawing to `out`, or nowhere (`None`).
    pub fn new(counted: &'static str, out: Option<W>) -> Self {
        Meter {
            counted,
            out: Mutex::new(Drawn { out, last: None }),
        }
    }

    /// Redraws the line, unless it was drawn under 100 ms ago and this is
    /// not the end.
    pub fn show(&self, progress: Progress) {
        let mut drawn = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Drawn { out, last } = &mut *drawn;
        let Some(out) = out.as_mut() else { return };
        let finished = progress.done >= progress.total;
        if !finished && last.is_some_and(|at| at.elapsed() < REDRAW_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let percent = (progress.done * 100)
            .checked_div(progress.total)
            .unwrap_or(100);
        // A failed draw is not worth failing the command for.
        let _ = write!(
            out,
            "\r{} of {} {} ({percent}%)",
            progress.done, progress.total, self.counted
        );
        let _ = out.flush();
    }

    /// Ends the line, if one was drawn.
    pub fn finish(&self) {
        let mut drawn = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Drawn { out, last } = &mut *drawn;
        if let (Some(out), Some(_)) = (out.as_mut(), last) {
            let _ = writeln!(out);
        }
    }

    #[cfg(test)]
    fn into_inner(self) -> Option<W> {
        self.out
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_sees_one_line_redrawn_in_place_and_ended() {
        let meter = Meter::new("users resealed", Some(Vec::new()));
        meter.show(Progress { done: 0, total: 4 });
        // Within 100 ms of the last draw: skipped, unless it is the end.
        meter.show(Progress { done: 1, total: 4 });
        meter.show(Progress { done: 4, total: 4 });
        meter.finish();
        let drawn = String::from_utf8(meter.into_inner().unwrap()).unwrap();
        assert_eq!(
            drawn,
            "\r0 of 4 users resealed (0%)\r4 of 4 users resealed (100%)\n"
        );
    }

    #[test]
    fn nothing_is_drawn_when_not_a_terminal_or_nothing_to_count() {
        let meter: Meter<Vec<u8>> = Meter::new("users resealed", None);
        meter.show(Progress { done: 1, total: 2 });
        meter.finish();
        assert!(meter.into_inner().is_none());
        let empty = Meter::new("deliveries recovered", Some(Vec::new()));
        empty.show(Progress { done: 0, total: 0 });
        empty.finish();
        assert_eq!(
            String::from_utf8(empty.into_inner().unwrap()).unwrap(),
            "\r0 of 0 deliveries recovered (100%)\n"
        );
    }
}
