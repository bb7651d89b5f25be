//! The configuration's own tests: defaults, files, variables, errors.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(file: Option<&str>, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::load(file.map(|text| ("webhookd.toml", text)), env(vars))
}

#[test]
fn with_nothing_set_the_spec_defaults_apply() {
    let config = load(None, &[]).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        config.store.to_string(),
        "sqlite://webhookd-data/webhookd.db"
    );
    assert_eq!(config.amqp_url, None);
    assert_eq!(config.amqp_queue, "webhook.events");
    assert!(config.require_https);
    assert!(config.allowed_networks.is_empty());
    assert_eq!(config.delivery_timeout, Duration::from_secs(5));
    assert_eq!(config.retry_schedule, RetrySchedule::default());
}

#[test]
fn the_environment_overrides_the_file() {
    let file = r#"
        listen = "0.0.0.0:9000"
        store = "redis://127.0.0.1:6379/0"
        require_https = false
        allowed_networks = ["127.0.0.0/8", "::1/128"]
        retry_schedule = "1s,2s"
    "#;
    let config = load(
        Some(file),
        &[
            ("WEBHOOKD_LISTEN", "127.0.0.1:9100"),
            ("WEBHOOKD_ALLOWED_NETWORKS", "10.0.0.0/8, 192.168.1.5"),
            ("WEBHOOKD_REQUIRE_HTTPS", "true"),
            ("WEBHOOKD_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            ("PATH", "/usr/bin"),
        ],
    )
    .unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:9100");
    assert_eq!(
        config.store,
        StoreUrl::Redis {
            url: "redis://127.0.0.1:6379/0".into()
        }
    );
    assert!(config.require_https);
    assert_eq!(
        config.allowed_networks,
        vec![
            "10.0.0.0/8".parse::<IpNet>().unwrap(),
            "192.168.1.5/32".parse().unwrap()
        ]
    );
    assert_eq!(config.retry_schedule.to_string(), "1s,2s");
    assert!(config.amqp_url.is_some());
}

#[test]
fn a_bad_value_names_its_variable_and_says_why() {
    let error = load(None, &[("WEBHOOKD_LISTEN", "8080")]).unwrap_err();
    assert_eq!(error.origin, "WEBHOOKD_LISTEN");
    assert!(error.to_string().contains("host:port"), "{error}");

    let error = load(None, &[("WEBHOOKD_RETRY_SCHEDULE", "5s,soon")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "WEBHOOKD_RETRY_SCHEDULE: delay soon: \"soon\" is not a duration (write e.g. 500ms, 5s, 5m, 2h, 1d)"
    );

    let error = load(None, &[("WEBHOOKD_REQUIRE_HTTPS", "maybe")]).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("WEBHOOKD_REQUIRE_HTTPS: \"maybe\" is not a boolean")
    );

    let error = load(None, &[("WEBHOOKD_STORE", "postgres://x")]).unwrap_err();
    assert!(error.to_string().contains("not a store URL"), "{error}");
}

#[test]
fn a_bad_file_value_names_the_key_and_the_file() {
    let error = load(Some("delivery_timeout = 5"), &[]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "delivery_timeout (in webhookd.toml): must be a string, not integer"
    );
    let error = load(Some("listen = "), &[]).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("webhookd.toml: not valid TOML"),
        "{error}"
    );
}

#[test]
fn unknown_keys_are_errors_not_silently_ignored() {
    let error = load(None, &[("WEBHOOKD_LISTN", "127.0.0.1:1")]).unwrap_err();
    assert_eq!(error.origin, "WEBHOOKD_LISTN");
    assert!(
        error
            .message
            .starts_with("unknown setting (known: listen, store")
    );
    let error = load(Some("retries = 3"), &[]).unwrap_err();
    assert_eq!(error.origin, "retries (in webhookd.toml)");
}

#[test]
fn ranges_and_combinations_are_checked() {
    let error = load(None, &[("WEBHOOKD_DELIVERY_TIMEOUT", "10m")]).unwrap_err();
    assert!(error.to_string().contains("outside 100ms..60s"), "{error}");
    let error = load(None, &[("WEBHOOKD_SHUTDOWN_GRACE", "3s")]).unwrap_err();
    assert!(error.to_string().contains("at least 8s"), "{error}");
    // A grace that outlasts the deadline but not the body read and the
    // record would stop with a sent attempt unrecorded (sent again).
    let tight = [
        ("WEBHOOKD_DELIVERY_TIMEOUT", "2s"),
        ("WEBHOOKD_SHUTDOWN_GRACE", "2100ms"),
    ];
    let error = load(None, &tight).unwrap_err();
    assert_eq!(error.origin, "WEBHOOKD_SHUTDOWN_GRACE");
    assert!(error.to_string().contains("at least 5s"), "{error}");
    let enough = [
        ("WEBHOOKD_DELIVERY_TIMEOUT", "2s"),
        ("WEBHOOKD_SHUTDOWN_GRACE", "5s"),
    ];
    assert!(load(None, &enough).is_ok());
    let error = load(None, &[("WEBHOOKD_KEEP_FAILED", "0s")]).unwrap_err();
    assert_eq!(error.origin, "WEBHOOKD_KEEP_FAILED");
    let config = load(None, &[("WEBHOOKD_KEEP_DELIVERED", "2s")]).unwrap();
    assert_eq!(config.keep_delivered, Duration::from_secs(2));
    assert_eq!(config.keep_failed, Duration::from_secs(30 * 24 * 3600));
    assert_eq!(config.keep_payloads, Duration::from_secs(72 * 3600));
    let config = load(None, &[("WEBHOOKD_KEEP_PAYLOADS", "0")]).unwrap();
    assert_eq!(config.keep_payloads, Duration::ZERO);
    let error = load(None, &[("WEBHOOKD_KEEP_PAYLOADS", "400d")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "WEBHOOKD_KEEP_PAYLOADS: 400d is over 365d"
    );
    let error = load(None, &[("WEBHOOKD_INGEST_TOKEN", "short")]).unwrap_err();
    assert_eq!(error.origin, "WEBHOOKD_INGEST_TOKEN");
    let error = load(None, &[("WEBHOOKD_AMQP_QUEUE", "")]).unwrap_err();
    assert_eq!(error.origin, "WEBHOOKD_AMQP_QUEUE");
    let error = load(None, &[("WEBHOOKD_API_RATE_LIMIT", "-1")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "WEBHOOKD_API_RATE_LIMIT: \"-1\" is not a whole number >= 0"
    );
    let error = load(None, &[("WEBHOOKD_AMQP_URL", "http://x")]).unwrap_err();
    assert_eq!(error.origin, "WEBHOOKD_AMQP_URL");
    // Fuzzing found this one: a long delivery timeout alone raises the
    // default grace rather than failing on a variable never set.
    let config = load(None, &[("WEBHOOKD_DELIVERY_TIMEOUT", "1m")]).unwrap();
    assert_eq!(config.shutdown_grace, config.min_shutdown_grace());
    let explicit = [
        ("WEBHOOKD_DELIVERY_TIMEOUT", "1m"),
        ("WEBHOOKD_SHUTDOWN_GRACE", "30s"),
    ];
    assert_eq!(
        load(None, &explicit).unwrap_err().origin,
        "WEBHOOKD_SHUTDOWN_GRACE"
    );
    let config = load(None, &[("WEBHOOKD_REDIS_WAIT_REPLICAS", "1")]).unwrap();
    assert_eq!(config.redis_wait_replicas, 1);
    let error = load(None, &[("WEBHOOKD_REDIS_WAIT_REPLICAS", "17")]).unwrap_err();
    assert!(error.message.contains("between 0 and 16"), "{error}");
    let config = load(None, &[("WEBHOOKD_AMQP_HEARTBEAT", "5s")]).unwrap();
    assert_eq!(config.amqp_heartbeat, Duration::from_secs(5));
    assert_eq!(Config::default().amqp_heartbeat, Duration::from_secs(10));
    for refused in ["0s", "1500ms", "301s"] {
        let error = load(None, &[("WEBHOOKD_AMQP_HEARTBEAT", refused)]).unwrap_err();
        assert!(error.message.contains("whole seconds"), "{error}");
    }
    let config = load(None, &[("WEBHOOKD_AMQP_QUEUE_TYPE", "quorum")]).unwrap();
    assert_eq!(config.amqp_queue_type, QueueType::Quorum);
    let error = load(None, &[("WEBHOOKD_AMQP_QUEUE_TYPE", "stream")]).unwrap_err();
    assert!(
        error.to_string().contains("use classic or quorum"),
        "{error}"
    );
    let error = load(None, &[("WEBHOOKD_ADMIN_TOKEN", "short")]).unwrap_err();
    assert_eq!(error.origin, "WEBHOOKD_ADMIN_TOKEN");
    let (first, second) = (EncryptionKey::generate(), EncryptionKey::generate());
    let both = format!("{}, {}", first.to_base64(), second.to_base64());
    let config = load(None, &[("WEBHOOKD_ENCRYPTION_KEY", &both)]).unwrap();
    assert_eq!(config.encryption_keys, vec![first, second]);
    assert!(!format!("{config:?}").contains(&both[..20]));
    let error = load(None, &[("WEBHOOKD_ENCRYPTION_KEY", "c2hvcnQ=")]).unwrap_err();
    assert_eq!(error.origin, "WEBHOOKD_ENCRYPTION_KEY");
    assert!(error.to_string().contains("must be 32"), "{error}");
}

#[test]
fn frame_ancestors_take_sources_and_nothing_that_ends_the_directive() {
    let ancestors = |value: &str| {
        load(None, &[("WEBHOOKD_PORTAL_FRAME_ANCESTORS", value)])
            .map(|config| config.portal_frame_ancestors)
    };
    assert_eq!(load(None, &[]).unwrap().portal_frame_ancestors, "'self'");
    for good in [
        "'none'",
        "'self' https://dashboard.example.com",
        "https://*.example.com:8443 http://localhost:3000",
    ] {
        assert_eq!(ancestors(good).unwrap(), good);
    }
    for bad in [
        "",
        "'self'; script-src *",
        "https://a.example, https://b.example",
        "'unsafe-inline'",
        "'none' 'self'",
        "https://example.com\r\nSet-Cookie: x=1",
        "data:",
        "'self' javascript:",
        "DATA:text/html",
    ] {
        let error = ancestors(bad).unwrap_err();
        assert_eq!(error.origin, "WEBHOOKD_PORTAL_FRAME_ANCESTORS", "{bad:?}");
    }
}

#[test]
fn debug_output_hides_secrets() {
    let config = load(
        None,
        &[
            ("WEBHOOKD_AMQP_URL", "amqp://guest:hunter2@rabbit:5672/%2f"),
            ("WEBHOOKD_STORE", "redis://:swordfish@redis:6379/0"),
            ("WEBHOOKD_INGEST_TOKEN", "tok_0123456789abcdef"),
            ("WEBHOOKD_ADMIN_TOKEN", "adm_0123456789abcdef"),
        ],
    )
    .unwrap();
    let debug = format!("{config:?}");
    for secret in [
        "hunter2",
        "swordfish",
        "tok_0123456789abcdef",
        "adm_0123456789abcdef",
    ] {
        assert!(!debug.contains(secret), "{secret} leaked: {debug}");
    }
    assert!(debug.contains("amqp://guest:***@rabbit:5672/%2f"));
}

#[test]
fn the_example_config_in_deploy_is_valid() {
    let text = include_str!("../../../../deploy/webhookd.example.toml");
    load(Some(text), &[]).unwrap();
}

#[test]
fn a_star_among_frame_ancestors_starts_with_a_warning() {
    let config = load(None, &[("WEBHOOKD_PORTAL_FRAME_ANCESTORS", "'self' *")]).unwrap();
    let warnings = config.warnings();
    assert!(
        warnings
            .iter()
            .any(|warning| warning.contains("any site may frame")),
        "{warnings:?}"
    );
    assert!(load(None, &[]).unwrap().warnings().is_empty());
}

#[test]
fn log_levels_that_would_silence_every_line_are_refused() {
    let level = |value: &str| load(None, &[("WEBHOOKD_LOG_LEVEL", value)]);
    for good in [
        "info",
        "WARN",
        "webhookd=debug,info",
        "webhookd_delivery=trace",
        "off",
    ] {
        assert_eq!(level(good).unwrap().log_level, good);
    }
    for bad in [
        "verbose",
        "warning",
        "",
        "info,verbose",
        "webhookd=loud",
        "=info",
    ] {
        let error = level(bad).unwrap_err();
        assert_eq!(error.origin, "WEBHOOKD_LOG_LEVEL", "{bad:?}");
        assert!(error.to_string().contains("not a log filter"), "{error}");
    }
}

#[test]
fn the_adoption_settings_have_joggai_defaults_and_are_checked() {
    let config = load(None, &[]).unwrap();
    assert_eq!(config.user_agent, "JoggAI-Webhook/2.0");
    assert_eq!(config.event_catalog, None);
    assert_eq!(config.public_url, None);
    assert_eq!(config.portal_product_name, "webhookd");

    let config = load(
        Some(r#"event_catalog = "/etc/webhookd/events.toml""#),
        &[
            (
                "WEBHOOKD_USER_AGENT",
                "Acme-Webhooks/1.0 (+https://acme.example)",
            ),
            ("WEBHOOKD_PUBLIC_URL", "https://hooks.example.com/"),
            ("WEBHOOKD_PORTAL_PRODUCT_NAME", " Acme Cloud "),
        ],
    )
    .unwrap();
    assert_eq!(
        config.user_agent,
        "Acme-Webhooks/1.0 (+https://acme.example)"
    );
    assert_eq!(
        config.event_catalog.as_deref(),
        Some(std::path::Path::new("/etc/webhookd/events.toml"))
    );
    assert_eq!(
        config.public_url.as_deref(),
        Some("https://hooks.example.com")
    );

    for (var, value, says) in [
        ("WEBHOOKD_USER_AGENT", "", "printable ASCII"),
        ("WEBHOOKD_USER_AGENT", "Acme\u{7f}", "printable ASCII"),
        ("WEBHOOKD_USER_AGENT", "é", "printable ASCII"),
        (
            "WEBHOOKD_PUBLIC_URL",
            "hooks.example.com",
            "absolute http(s) URL",
        ),
        (
            "WEBHOOKD_PUBLIC_URL",
            "ftp://hooks.example.com",
            "absolute http(s) URL",
        ),
    ] {
        let error = load(None, &[(var, value)]).unwrap_err().to_string();
        assert!(
            error.contains(var) && error.contains(says),
            "{var}={value:?}: {error}"
        );
    }
}

#[test]
fn egress_bind_is_an_ip_address() {
    let config = load(None, &[("WEBHOOKD_EGRESS_BIND", "127.0.0.2")]).unwrap();
    assert_eq!(config.egress_bind, Some("127.0.0.2".parse().unwrap()));
    let config = load(None, &[("WEBHOOKD_EGRESS_BIND", "::1")]).unwrap();
    assert_eq!(config.egress_bind, Some("::1".parse().unwrap()));
    assert_eq!(load(None, &[]).unwrap().egress_bind, None);
    let error = load(None, &[("WEBHOOKD_EGRESS_BIND", "eth0")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "WEBHOOKD_EGRESS_BIND: \"eth0\" is not an IP address, e.g. 192.0.2.10 or 2001:db8::10"
    );
}

#[test]
fn egress_proxy_is_an_http_proxy_whose_credentials_never_show() {
    let config = load(
        None,
        &[(
            "WEBHOOKD_EGRESS_PROXY",
            "http://deliver%40acme:s3cret@proxy.internal:3128",
        )],
    )
    .unwrap();
    let proxy = config.egress_proxy.clone().unwrap();
    assert_eq!(proxy.address, "http://proxy.internal:3128");
    // base64("deliver@acme:s3cret")
    assert_eq!(
        proxy.authorization.as_deref(),
        Some("Basic ZGVsaXZlckBhY21lOnMzY3JldA==")
    );
    let shown = format!("{config:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("ZGVsaXZlck"),
        "{shown}"
    );
    let plain = load(None, &[("WEBHOOKD_EGRESS_PROXY", "http://10.0.0.5:3128")]).unwrap();
    assert_eq!(plain.egress_proxy.unwrap().authorization, None);
    for refused in [
        "https://proxy:3128",
        "socks5://proxy:1080",
        "proxy:3128",
        "http://proxy:3128/path",
    ] {
        let error = load(None, &[("WEBHOOKD_EGRESS_PROXY", refused)]).unwrap_err();
        assert_eq!(error.origin, "WEBHOOKD_EGRESS_PROXY", "{refused}");
    }
}

#[test]
fn operator_event_targets_are_read_and_shown_without_passwords() {
    use crate::operator::OperatorTarget;
    let config = load(
        None,
        &[(
            "WEBHOOKD_OPERATOR_EVENTS",
            "amqp://ops:s3cret@rabbit:5672/%2f/webhookd.operator,https://ops.example.com/hook",
        )],
    )
    .unwrap();
    assert_eq!(
        config.operator_events,
        [
            OperatorTarget::Amqp {
                url: "amqp://ops:s3cret@rabbit:5672/%2f".into(),
                exchange: "webhookd.operator".into(),
            },
            OperatorTarget::Webhook {
                url: "https://ops.example.com/hook".into()
            },
        ]
    );
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("webhookd.operator"), "{shown}");
    assert!(load(None, &[]).unwrap().operator_events.is_empty());
    for refused in [
        "ftp://x/y",
        "amqp://rabbit:5672/",
        "amqp://rabbit/amq.topic",
    ] {
        let error = load(None, &[("WEBHOOKD_OPERATOR_EVENTS", refused)]).unwrap_err();
        assert_eq!(error.origin, "WEBHOOKD_OPERATOR_EVENTS", "{refused}");
    }
}
