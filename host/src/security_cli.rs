//! `hubsync security-events`: the security event log of a node (issue 7
//! item 6) — authentication failures, lockouts, authorization denials,
//! limit violations, token issue/rotate/revoke — newest first, filtered by
//! time, kind and node. Events never hold a token, key or entity data.

use chrono::{DateTime, Utc};
use clap::Args;
use hubsync_core::security::{SecurityEvent, SecurityEventKind, SecurityEventQuery};
use hubsync_core::store::Store;

use crate::cli::{ConfigArg, JsonArg};
use crate::error::HostError;

#[derive(Debug, Args)]
pub struct SecurityEventsArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only events at or after this time: RFC 3339 (2026-11-24T10:00:00Z)
    /// or an age such as 30m, 24h, 7d.
    #[arg(long)]
    pub since: Option<String>,
    /// Only events of this kind: auth_failed, lockout, authz_denied,
    /// limit_exceeded, token_issued, token_rotated, token_revoked.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only events about the node with this code.
    #[arg(long)]
    pub node: Option<String>,
    /// At most this many events (the newest).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[command(flatten)]
    pub json: JsonArg,
}

/// Parses `--since`: an RFC 3339 time, or an age (`90s`, `30m`, `24h`,
/// `7d`) counted back from `now`.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, HostError> {
    let text = text.trim();
    if let Some(t) = hubsync_core::entity::parse_ts(text) {
        return Ok(t);
    }
    let bad = || {
        HostError::Other(format!(
            "--since {text:?} is neither an RFC 3339 time (2026-11-24T10:00:00Z) nor an age (90s, 30m, 24h, 7d)"
        ))
    };
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let age = match unit {
        "s" => chrono::Duration::try_seconds(n),
        "m" => chrono::Duration::try_minutes(n),
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        _ => None,
    }
    .filter(|d| *d >= chrono::Duration::zero())
    .ok_or_else(bad)?;
    now.checked_sub_signed(age).ok_or_else(bad)
}

/// Builds the query from the arguments (resolving the node code).
pub async fn query(
    store: &dyn Store,
    args: &SecurityEventsArgs,
) -> Result<SecurityEventQuery, HostError> {
    let kind = args
        .kind
        .as_deref()
        .map(|k| {
            SecurityEventKind::parse(k.trim()).ok_or_else(|| {
                HostError::Other(format!(
                    "--kind {k:?} is not a security event kind; use one of {}",
                    SecurityEventKind::names()
                ))
            })
        })
        .transpose()?;
    let node_id = match &args.node {
        None => None,
        Some(code) => Some(
            store
                .get_node_by_code(code)
                .await?
                .ok_or_else(|| {
                    HostError::Other(format!(
                        "no node with code {code:?}; `hubsync node list` shows the codes"
                    ))
                })?
                .id,
        ),
    };
    Ok(SecurityEventQuery {
        since: args
            .since
            .as_deref()
            .map(|s| parse_since(s, hubsync_core::entity::now_utc()))
            .transpose()?,
        kind,
        node_id,
        limit: args.limit,
    })
}

/// The events as a table, newest first.
pub fn table(events: &[SecurityEvent]) -> String {
    if events.is_empty() {
        return "no security events\n".into();
    }
    let mut out = format!(
        "{:<27} {:<15} {:<16} {:<22} DETAIL\n",
        "AT", "KIND", "NODE", "PEER"
    );
    for e in events {
        out.push_str(&format!(
            "{:<27} {:<15} {:<16} {:<22} {}\n",
            hubsync_core::entity::format_ts(e.at),
            e.kind.as_str(),
            e.node_code.as_deref().unwrap_or("-"),
            e.peer.as_deref().unwrap_or("-"),
            e.detail
        ));
    }
    out
}

/// Records an operator's action on a node's credentials (token issued,
/// rotated, revoked). A failure to record is reported on stderr but does
/// not undo the action, which is already committed.
pub async fn record_admin_event(
    store: &dyn Store,
    kind: SecurityEventKind,
    node: &hubsync_core::store::NodeRecord,
    detail: &str,
) {
    let event = SecurityEvent::new(kind, detail).node(node.id, &node.code);
    if let Err(e) = store.record_security_event(&event).await {
        tracing::error!(error = %e, kind = kind.as_str(), node = %node.code, "could not record a security event");
        eprintln!("warning: the security event ({kind}) could not be recorded: {e}");
    }
}

/// `hubsync security-events`.
pub async fn run(args: SecurityEventsArgs) -> Result<(), HostError> {
    let config = crate::config::Config::load(&args.config.config)?;
    let store = crate::storage::open_store_with(
        &config.storage_url_resolved(),
        &config.storage.pool_options(),
    )
    .await?;
    let result = async {
        let q = query(store.as_ref(), &args).await?;
        Ok::<_, HostError>(store.security_events(&q).await?)
    }
    .await;
    store.close().await;
    let events = result?;
    if args.json.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&events).unwrap_or_default()
        );
    } else {
        print!("{}", table(&events));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_an_age() {
        let now = hubsync_core::entity::parse_ts("2026-11-24T10:00:00Z").unwrap();
        assert_eq!(
            parse_since("2026-11-20T00:00:00Z", now).unwrap(),
            hubsync_core::entity::parse_ts("2026-11-20T00:00:00Z").unwrap()
        );
        assert_eq!(
            parse_since("24h", now).unwrap(),
            now - chrono::Duration::hours(24)
        );
        assert_eq!(
            parse_since("30m", now).unwrap(),
            now - chrono::Duration::minutes(30)
        );
        assert_eq!(
            parse_since("7d", now).unwrap(),
            now - chrono::Duration::days(7)
        );
        for bad in ["", "h", "-1h", "5y", "yesterday", "99999999999999d"] {
            let err = parse_since(bad, now).unwrap_err().to_string();
            assert!(err.contains("--since"), "{bad}: {err}");
        }
    }
}
