//! The operator: the management API calls a campaign makes while the
//! faults run — moving an endpoint to a new URL, disabling and enabling
//! it, rotating its secret, test sends, recover, and replacing an
//! endpoint (DELETE, then a new one) — each written into the [`World`]
//! with the times the checker needs.
//!
//! A call the system did not answer for sure (no answer, or a 5xx: the
//! write may have landed) is settled before it is written down: PUT and
//! DELETE are sent again until answered, a create or a rotation is looked
//! up in the endpoint listing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rand::Rng as _;
use rand::rngs::StdRng;
use reqwest::Method;
use serde_json::{Value, json};

use crate::faults::Window;
use crate::receivers::Receivers;
use crate::world::{Span, World};

const EVENTS: [&str; 1] = ["generated_video_success"];

/// One call and its answer, for the report.
#[derive(Debug, Clone)]
pub struct Call {
    pub what: String,
    /// The HTTP status, `None` without an answer.
    pub status: Option<u16>,
}

/// A management API client spreading calls over the processes.
#[derive(Debug)]
pub struct Api {
    client: reqwest::Client,
    ports: Vec<u16>,
    next: AtomicUsize,
    keys: Vec<String>,
    pub calls: Vec<Call>,
}

impl Api {
    /// Makes a user (and an API key) for each of `owners` tenants through
    /// the admin API.
    pub async fn new(ports: Vec<u16>, admin_token: &str, owners: usize) -> anyhow::Result<Api> {
        let mut api = Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()?,
            ports,
            next: AtomicUsize::new(0),
            keys: Vec::new(),
            calls: Vec::new(),
        };
        for owner in 0..owners {
            let body = json!({"username": crate::tenant(owner)});
            let (status, answer) = api
                .settled(Method::POST, "/internal/users", admin_token, Some(&body))
                .await;
            let key = answer["data"]["api_key"]
                .as_str()
                .with_context(|| format!("no API key for a new user ({status}): {answer}"))?;
            api.keys.push(key.to_owned());
        }
        Ok(api)
    }

    /// Sends one call to the next process; `None` without an answer.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        let port = self.ports[self.next.fetch_add(1, Ordering::Relaxed) % self.ports.len()];
        let mut request = self
            .client
            .request(method.clone(), format!("http://127.0.0.1:{port}{path}"));
        // The admin API takes a bearer token, the management API a key.
        request = if path.starts_with("/internal/") {
            request.bearer_auth(token)
        } else {
            request.header("x-api-key", token)
        };
        if let Some(body) = body {
            request = request.json(body);
        }
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let json = response.json::<Value>().await.unwrap_or(Value::Null);
                Some((status, json))
            }
            Err(_) => None,
        };
        self.calls.push(Call {
            what: format!("{method} {path}"),
            status: answer.as_ref().map(|(status, _)| *status),
        });
        answer
    }

    /// Sends `method path` until some process answers it for sure (not
    /// 5xx, not 429), for at most a minute; the last answer.
    async fn settled(
        &mut self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self.call(method.clone(), path, token, body).await;
            match answer {
                Some((status, json))
                    if (status < 500 && status != 429) || Instant::now() > deadline =>
                {
                    return (status, json);
                }
                None if Instant::now() > deadline => return (0, Value::Null),
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// The endpoints the owner's listing shows, settled.
    async fn listed(&mut self, owner: usize) -> Vec<Value> {
        let key = self.keys[owner].clone();
        let (_, answer) = self.settled(Method::GET, "/v2/endpoints", &key, None).await;
        answer["data"]["endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Creates slot `n`'s endpoint for its owner at URL version 0.
    pub async fn create(
        &mut self,
        world: &World,
        receivers: &Receivers,
        n: usize,
    ) -> anyhow::Result<()> {
        let owner = world.lock()[n].owner;
        let url = receivers.url(n, 0);
        let key = self.keys[owner].clone();
        let body = json!({"url": url, "events": EVENTS});
        let deadline = Instant::now() + Duration::from_secs(60);
        let created = loop {
            let sent = Instant::now();
            match self
                .call(Method::POST, "/v2/endpoint", &key, Some(&body))
                .await
            {
                Some((status, answer)) if status < 300 => break (sent, answer["data"].clone()),
                Some((status, answer)) if status < 500 => {
                    bail!("creating an endpoint: {status} {answer}")
                }
                _ => {}
            }
            // Not answered for sure: did it land?
            if let Some(found) = self
                .listed(owner)
                .await
                .into_iter()
                .find(|endpoint| endpoint["url"] == url)
            {
                break (sent, found);
            }
            if Instant::now() > deadline {
                bail!("no process would create an endpoint for a minute");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let (sent, data) = created;
        let id = data["endpoint_id"].as_str().context("no endpoint_id")?;
        let secret = data["secret"].as_str().context("no secret")?;
        let mut world = world.lock();
        let endpoint = &mut world[n];
        endpoint.id = Some(id.to_owned());
        endpoint.created = Some(Instant::now());
        endpoint.secrets.push(crate::world::Secret {
            value: secret.to_owned(),
            from: sent,
            until: None,
        });
        Ok(())
    }

    /// PUT with the endpoint's current URL (or the next version's), and
    /// `status` when given; settled. When it was answered.
    async fn put(
        &mut self,
        world: &World,
        receivers: &Receivers,
        n: usize,
        version: usize,
        status: Option<&str>,
    ) -> anyhow::Result<Instant> {
        let (owner, id) = endpoint_id(world, n)?;
        let mut body = json!({"url": receivers.url(n, version), "events": EVENTS});
        if let Some(status) = status {
            body["status"] = json!(status);
        }
        let key = self.keys[owner].clone();
        let (answer, json) = self
            .settled(
                Method::PUT,
                &format!("/v2/endpoint/{id}"),
                &key,
                Some(&body),
            )
            .await;
        if answer != 200 {
            bail!("PUT /v2/endpoint/{id} answered {answer}: {json}");
        }
        Ok(Instant::now())
    }

    /// Moves slot `n` to its next URL version.
    pub async fn move_url(
        &mut self,
        world: &World,
        receivers: &Receivers,
        n: usize,
    ) -> anyhow::Result<()> {
        let version = world.lock()[n].version() + 1;
        let answered = self.put(world, receivers, n, version, None).await?;
        world.lock()[n].moves.push(answered);
        Ok(())
    }

    pub async fn disable(
        &mut self,
        world: &World,
        receivers: &Receivers,
        n: usize,
    ) -> anyhow::Result<()> {
        let version = world.lock()[n].version();
        let sent = Instant::now();
        world.lock()[n].disabled.push(Span {
            from: sent,
            until: None,
        });
        self.put(world, receivers, n, version, Some("disabled"))
            .await?;
        Ok(())
    }

    pub async fn enable(
        &mut self,
        world: &World,
        receivers: &Receivers,
        n: usize,
    ) -> anyhow::Result<()> {
        let version = world.lock()[n].version();
        let answered = self
            .put(world, receivers, n, version, Some("enabled"))
            .await?;
        if let Some(span) = world.lock()[n].disabled.last_mut() {
            span.until = Some(answered);
        }
        Ok(())
    }

    /// A new secret for slot `n`, the old one signing on for `grace`.
    pub async fn rotate(&mut self, world: &World, n: usize, grace: Duration) -> anyhow::Result<()> {
        let (owner, id) = endpoint_id(world, n)?;
        let key = self.keys[owner].clone();
        let body = json!({"grace_seconds": grace.as_secs()});
        let sent = Instant::now();
        let path = format!("/v2/endpoint/{id}/rotate-secret");
        if let Some((200, answer)) = self.call(Method::POST, &path, &key, Some(&body)).await {
            let secret = answer["data"]["secret"].as_str().context("no secret")?;
            world.lock()[n].rotated(secret.to_owned(), sent, Instant::now(), grace);
            return Ok(());
        }
        // Not answered for sure: the listing says which secret is in force.
        let listed = self.listed(owner).await;
        let answered = Instant::now();
        let secret = listed
            .iter()
            .find(|endpoint| endpoint["endpoint_id"] == id.as_str())
            .and_then(|endpoint| endpoint["secret"].as_str())
            .context("a rotated endpoint is not listed")?
            .to_owned();
        let mut world = world.lock();
        let endpoint = &mut world[n];
        endpoint.secret_unknown.push(Span {
            from: sent,
            until: Some(answered),
        });
        if endpoint
            .secrets
            .last()
            .is_none_or(|last| last.value != secret)
        {
            endpoint.rotated(secret, sent, answered, grace);
        }
        Ok(())
    }

    /// One test send to slot `n`; written down when answered for sure.
    pub async fn test(&mut self, world: &World, n: usize) -> anyhow::Result<()> {
        let (owner, id) = endpoint_id(world, n)?;
        let key = self.keys[owner].clone();
        let path = format!("/v2/endpoint/{id}/test");
        if let Some((200, answer)) = self.call(Method::POST, &path, &key, None).await {
            let event_id = answer["data"]["event_id"].as_str().context("no event_id")?;
            world.lock()[n]
                .tests
                .push((event_id.to_owned(), Instant::now()));
        }
        Ok(())
    }

    /// `recover` over the whole run for slot `n`: one more attempt for
    /// every dead delivery, which may come twice — the window explains it.
    pub async fn recover(
        &mut self,
        world: &World,
        n: usize,
        since_unix: i64,
    ) -> anyhow::Result<Window> {
        let (owner, id) = endpoint_id(world, n)?;
        let key = self.keys[owner].clone();
        let path = format!("/v2/endpoint/{id}/recover");
        let from = Instant::now();
        let (status, answer) = self
            .settled(
                Method::POST,
                &path,
                &key,
                Some(&json!({"since": since_unix})),
            )
            .await;
        if status != 200 {
            bail!("recover answered {status}: {answer}");
        }
        Ok(Window {
            kind: "recover",
            from,
            until: Instant::now() + Duration::from_secs(10),
        })
    }

    /// Deletes slot `n`'s endpoint (settled: 200, or already gone).
    pub async fn delete(&mut self, world: &World, n: usize) -> anyhow::Result<()> {
        let (owner, id) = endpoint_id(world, n)?;
        let key = self.keys[owner].clone();
        // Marked at once so no other call picks it; the answer's time is
        // the one checks start from.
        world.lock()[n].deleted = Some(Instant::now());
        let (status, answer) = self
            .settled(Method::DELETE, &format!("/v2/endpoint/{id}"), &key, None)
            .await;
        if status != 200 && status != 404 {
            bail!("DELETE answered {status}: {answer}");
        }
        world.lock()[n].deleted = Some(Instant::now());
        Ok(())
    }
}

impl Api {
    /// The live slots that still have pending deliveries.
    pub async fn pending(&mut self, world: &World) -> anyhow::Result<Vec<usize>> {
        let live: Vec<usize> = {
            let world = world.lock();
            (0..world.len()).filter(|n| world[*n].is_live()).collect()
        };
        let mut pending = Vec::new();
        for n in live {
            let (owner, id) = endpoint_id(world, n)?;
            let key = self.keys[owner].clone();
            let path = format!("/v2/endpoint/{id}/deliveries?status=pending&limit=1");
            let (status, answer) = self.settled(Method::GET, &path, &key, None).await;
            if status != 200 {
                bail!("listing pending deliveries answered {status}: {answer}");
            }
            if answer["data"]["deliveries"]
                .as_array()
                .is_some_and(|page| !page.is_empty())
            {
                pending.push(n);
            }
        }
        Ok(pending)
    }

    /// Slot `n`'s delivered count, as the store counts it.
    pub async fn delivered_count(&mut self, world: &World, n: usize) -> anyhow::Result<u64> {
        let (owner, id) = endpoint_id(world, n)?;
        let key = self.keys[owner].clone();
        let path = format!("/v2/endpoint/{id}");
        let (status, answer) = self.settled(Method::GET, &path, &key, None).await;
        answer["data"]["counts"]["delivered"]
            .as_u64()
            .with_context(|| format!("GET {path} answered {status}: {answer}"))
    }

    /// The event ids of slot `n`'s deliveries in `status`: `failed` (dead,
    /// kept in the store with their attempts: not lost) or `delivered`.
    pub async fn events(
        &mut self,
        world: &World,
        n: usize,
        status: &str,
    ) -> anyhow::Result<Vec<String>> {
        let (owner, id) = endpoint_id(world, n)?;
        let key = self.keys[owner].clone();
        let mut events = Vec::new();
        let mut after = String::new();
        loop {
            let mut path = format!("/v2/endpoint/{id}/deliveries?status={status}&limit=100");
            if !after.is_empty() {
                path = format!("{path}&after={after}");
            }
            let (answer_status, answer) = self.settled(Method::GET, &path, &key, None).await;
            if answer_status != 200 {
                bail!("listing {status} deliveries answered {answer_status}: {answer}");
            }
            let page = answer["data"]["deliveries"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            events.extend(
                page.iter()
                    .filter_map(|delivery| Some(delivery["event_id"].as_str()?.to_owned())),
            );
            match answer["data"]["next_after"].as_str() {
                Some(next) => next.clone_into(&mut after),
                None => return Ok(events),
            }
        }
    }
}

fn endpoint_id(world: &World, n: usize) -> anyhow::Result<(usize, String)> {
    let world = world.lock();
    let endpoint = &world[n];
    let id = endpoint
        .id
        .clone()
        .context("the endpoint was never created")?;
    Ok((endpoint.owner, id))
}

/// The operator's steps during a run, drawn from its seed.
#[derive(Debug, Clone, Copy)]
enum Step {
    NewUrl,
    Disable,
    Rotate,
    Test,
    Recover,
    Replace,
}

/// Runs the operator until `stop`: a call every 1–4 s; disabled endpoints
/// enabled again after 2–40 s, and all of them when it stops. The windows
/// of calls that may explain a duplicate (recover).
pub async fn operate(
    mut api: Api,
    world: World,
    receivers: Receivers,
    seed: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<(Api, Vec<Window>)> {
    use rand::SeedableRng as _;
    let mut random = StdRng::seed_from_u64(seed);
    let since_unix = webhookd_core::time::unix_seconds() - 1;
    let mut windows = Vec::new();
    let mut enable_at: Vec<(usize, Instant)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(random.random_range(1_000..4_000))).await;
        let now = Instant::now();
        for (n, _) in enable_at.iter().filter(|(_, at)| *at <= now) {
            api.enable(&world, &receivers, *n).await?;
        }
        enable_at.retain(|(_, at)| *at > now);
        let live: Vec<usize> = {
            let world = world.lock();
            (0..world.len()).filter(|n| world[*n].is_live()).collect()
        };
        let n = live[random.random_range(0..live.len())];
        let choice = [
            Step::NewUrl,
            Step::Disable,
            Step::Rotate,
            Step::Test,
            Step::Recover,
            Step::Replace,
        ][random.random_range(0..6)];
        match choice {
            Step::NewUrl => api.move_url(&world, &receivers, n).await?,
            Step::Disable if !world.lock()[n].is_disabled() => {
                api.disable(&world, &receivers, n).await?;
                enable_at.push((
                    n,
                    Instant::now() + Duration::from_millis(random.random_range(2_000..40_000)),
                ));
            }
            Step::Disable => {}
            Step::Rotate => {
                let grace = if random.random_bool(0.5) {
                    Duration::ZERO
                } else {
                    Duration::from_secs(86_400)
                };
                api.rotate(&world, n, grace).await?;
            }
            Step::Test => api.test(&world, n).await?,
            Step::Recover => windows.push(api.recover(&world, n, since_unix).await?),
            Step::Replace => {
                let spare = {
                    let world = world.lock();
                    (0..world.len()).find(|spare| world[*spare].created.is_none())
                };
                if let Some(spare) = spare {
                    let owner = world.lock()[n].owner;
                    api.delete(&world, n).await?;
                    enable_at.retain(|(disabled, _)| *disabled != n);
                    world.lock()[spare].owner = owner;
                    api.create(&world, &receivers, spare).await?;
                }
            }
        }
    }
    for (n, _) in enable_at {
        api.enable(&world, &receivers, n).await?;
    }
    Ok((api, windows))
}
