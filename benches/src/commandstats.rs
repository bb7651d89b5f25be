//! What Redis did during a measured phase, from `INFO commandstats`
//! (reset before with `CONFIG RESETSTAT`): script calls, the time spent in
//! them, and every command run, those run by scripts included — the
//! figures issue 26 divides by deliveries.

use std::collections::HashMap;

/// Commands that are not the store's work: the harness's own reads and
/// the scripts' loading.
const NOT_WORK: [&str; 6] = ["info", "config", "script", "ping", "client", "hello"];
/// Script invocations: their time includes the commands they run.
const SCRIPT_CALLS: [&str; 5] = ["evalsha", "eval", "evalsha_ro", "eval_ro", "fcall"];

/// Calls and microseconds per command.
#[derive(Debug, Clone, Default)]
pub struct CommandStats {
    commands: HashMap<String, (u64, u64)>,
}

impl CommandStats {
    /// Zeroes the server's counters.
    pub async fn reset(redis_url: &str) -> anyhow::Result<()> {
        let mut connection = connect(redis_url).await?;
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(&mut connection)
            .await?;
        Ok(())
    }

    /// The server's counters now.
    pub async fn read(redis_url: &str) -> anyhow::Result<CommandStats> {
        let mut connection = connect(redis_url).await?;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut connection)
            .await?;
        Ok(CommandStats::parse(&info))
    }

    /// `cmdstat_<name>:calls=<n>,usec=<n>,…` lines.
    fn parse(info: &str) -> CommandStats {
        let commands = info
            .lines()
            .filter_map(|line| {
                let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let field = |key: &str| {
                    fields
                        .split(',')
                        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
                        .and_then(|value| value.parse::<u64>().ok())
                };
                Some((name.to_owned(), (field("calls")?, field("usec")?)))
            })
            .collect();
        CommandStats { commands }
    }

    /// Script invocations.
    pub fn script_calls(&self) -> u64 {
        self.sum(|name| SCRIPT_CALLS.contains(&name), |(calls, _)| calls)
    }

    /// Microseconds inside scripts.
    pub fn script_usec(&self) -> u64 {
        self.sum(|name| SCRIPT_CALLS.contains(&name), |(_, usec)| usec)
    }

    /// Commands run, directly or by scripts (the scripts themselves and
    /// the harness's reads not counted).
    pub fn commands(&self) -> u64 {
        self.sum(
            |name| !SCRIPT_CALLS.contains(&name) && !NOT_WORK.contains(&name),
            |(calls, _)| calls,
        )
    }

    /// Microseconds of the store's work: scripts, and commands sent
    /// directly (a script's commands are inside its time). Commands run by
    /// scripts are counted in their own lines too, so this overcounts by
    /// their time; the scripts' time is the larger part.
    pub fn usec(&self) -> u64 {
        self.sum(|name| !NOT_WORK.contains(&name), |(_, usec)| usec)
    }

    /// The most called commands, for the note: "zadd 7.0, hset 3.0, …" per
    /// `deliveries`.
    pub fn top(&self, deliveries: u64, most: usize) -> String {
        let mut named: Vec<(&String, u64)> = self
            .commands
            .iter()
            .filter(|(name, _)| !NOT_WORK.contains(&name.as_str()))
            .map(|(name, (calls, _))| (name, *calls))
            .collect();
        named.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        named
            .iter()
            .take(most)
            .map(|(name, calls)| format!("{name} {:.2}", per(*calls, deliveries)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn sum(&self, wanted: impl Fn(&str) -> bool, of: impl Fn((u64, u64)) -> u64) -> u64 {
        self.commands
            .iter()
            .filter(|(name, _)| wanted(name))
            .map(|(_, figures)| of(*figures))
            .sum()
    }
}

/// `count ÷ deliveries`.
#[allow(clippy::cast_precision_loss)]
pub fn per(count: u64, deliveries: u64) -> f64 {
    count as f64 / deliveries.max(1) as f64
}

async fn connect(redis_url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(redis_url)?
        .get_multiplexed_async_connection()
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_lines_are_read_and_scripts_told_apart() {
        let info = "# Commandstats\r\n\
            cmdstat_evalsha:calls=10,usec=500,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_zadd:calls=70,usec=140,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_hset:calls=30,usec=60,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_info:calls=2,usec=40,usec_per_call=20.00,rejected_calls=0,failed_calls=0\r\n";
        let stats = CommandStats::parse(info);
        assert_eq!(stats.script_calls(), 10);
        assert_eq!(stats.script_usec(), 500);
        assert_eq!(stats.commands(), 100);
        assert_eq!(stats.top(10, 2), "zadd 7.00, hset 3.00");
    }
}
