//! `webhookd recover`: the dead deliveries of one endpoint in a window get
//! one more attempt (SPEC §8), in the same bounded batches as the API's
//! recover, counted first so a terminal can show how far it has come.

use std::io::Write as _;

use anyhow::bail;
use webhookd_core::Config;
use webhookd_store::{DeliveryWindow, Progress};

use crate::opening::{Opening, open_store};
use crate::progress::Meter;

/// Dead deliveries made pending per store call: a few milliseconds each.
const BATCH: usize = 1000;

pub async fn run(
    config: &Config,
    opening: Opening,
    username: &str,
    endpoint_id: &str,
    since: i64,
    until: Option<i64>,
) -> anyhow::Result<()> {
    let until = until.unwrap_or_else(webhookd_core::time::unix_seconds);
    if until < since {
        bail!("--until ({until}) is before --since ({since})");
    }
    let store = open_store(config, opening).await?;
    if store.get_endpoint(username, endpoint_id).await?.is_none() {
        bail!("{username} has no endpoint {endpoint_id} (webhookd users list, GET /v2/endpoints)");
    }
    let window = DeliveryWindow {
        from_ms: since.saturating_mul(1000),
        until_ms: until.saturating_add(1).saturating_mul(1000),
    };
    let total = store.count_dead(username, endpoint_id, window).await?;
    let meter = Meter::on_stderr("dead deliveries recovered");
    let mut recovered = 0_u64;
    loop {
        meter.show(Progress {
            done: recovered,
            total: total.max(recovered),
        });
        let step = store
            .recover(username, endpoint_id, window, store.now_ms(), BATCH)
            .await;
        let step = match step {
            Ok(step) => step,
            Err(error) => {
                meter.finish();
                return Err(error.into());
            }
        };
        if step == 0 {
            break;
        }
        recovered += step as u64;
    }
    meter.finish();
    tracing::info!(
        username,
        endpoint_id,
        recovered,
        "dead deliveries recovered"
    );
    writeln!(
        std::io::stdout(),
        "{recovered} dead deliver{} of {endpoint_id} get one more attempt",
        if recovered == 1 { "y" } else { "ies" }
    )?;
    Ok(())
}
