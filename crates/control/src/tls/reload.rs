//! Certificate reload without a restart: on SIGHUP and when the certificate, key
//! or client CA file changes (`tls.reload_poll_ms`; the triggers are
//! `stile_tls::ReloadTriggers`, shared with the edge), the files are loaded and
//! checked as at start-up and the new server configuration swapped in
//! ([`ServerTls::reload`]). A bad pair keeps the one in force: logged
//! (`control.tls_reload_failed`, with the file and the reason) and counted
//! (`stile_control_tls_reloads_total{result="error"}`). New handshakes get the
//! new certificate; established connections keep theirs.

use std::sync::Arc;

use stile_tls::ReloadTriggers;

use super::{ServerTls, TlsObserver};
use crate::clock::Clock;

/// The reload triggers of `tls`'s files. Called while serving, before
/// [`run`], so SIGHUP is handled from then on.
pub(crate) fn triggers(tls: &ServerTls) -> ReloadTriggers {
    let (files, poll_ms) = tls.watched();
    ReloadTriggers::new(&files, poll_ms)
}

/// Reloads on every trigger, until aborted.
pub(crate) async fn run(
    mut triggers: ReloadTriggers,
    tls: Arc<ServerTls>,
    metrics: Arc<dyn TlsObserver>,
    clock: Arc<dyn Clock>,
) {
    loop {
        let trigger = triggers.next().await;
        reload(&tls, metrics.as_ref(), clock.now_secs(), trigger);
    }
}

/// One reload at time `now` (Unix seconds); whether the new files were taken.
pub(crate) fn reload(tls: &ServerTls, metrics: &dyn TlsObserver, now: u64, trigger: &'static str) -> bool {
    match tls.reload(now) {
        Ok((not_after, names)) => {
            metrics.tls_certificate_expiry(not_after);
            metrics.tls_reload(true);
            tracing::info!(trigger, tls.names = %names, tls.not_after = not_after, "control.tls_reloaded");
            true
        }
        Err(e) => {
            metrics.tls_reload(false);
            tracing::error!(trigger, error = %e, "control.tls_reload_failed: keeping the certificate in force");
            false
        }
    }
}

/// Without `[tls]`: SIGHUP (`triggers` of no file, made before serving) is logged
/// (`control.sighup`) and ignored, until aborted.
pub(crate) async fn ignore_sighup(mut triggers: ReloadTriggers) {
    loop {
        triggers.next().await;
        tracing::info!("control.sighup: nothing to reload (no [tls])");
    }
}
