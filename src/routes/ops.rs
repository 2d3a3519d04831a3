//! Operations: `/stats` (JSON snapshot of the broadcaster), `/metrics`, `/healthz` (the process
//! lives) and `/readyz` (it takes publishes).

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};

use super::AppState;
use crate::{auth, broadcaster::GetStats, error::HubError};

/// How long the health check waits for the broadcaster before calling it unhealthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// The subscriber count, history size and ids, and the totals; for a reader who may see them
/// (see [`auth::may_see_selectors`]), also the subscribers per selector, the
/// `--stats-selectors` with the most subscribers.
pub async fn stats(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, HubError> {
    let selectors = auth::may_see_selectors(&req, &state.keys, &state.selectors)
        .await?
        .then_some(state.settings.stats_selectors);
    let stats = state.ask(GetStats { selectors }).await?;
    Ok(HttpResponse::Ok().json(stats))
}

/// Every metric in the Prometheus text format. Gauges owned by the broadcaster are current as
/// of its last change.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    crate::metrics::set_gauge(&state.metrics.selector_bytes, state.selectors.used_bytes());
    crate::metrics::set_gauge(
        &state.metrics.log_ready,
        usize::from(state.ready.is_ready()),
    );
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render())
}

/// 200 while the broadcaster answers, 503 otherwise.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    // Not through `ask`: the probe's own timeout is part of the broadcaster's reply.
    match state
        .broadcaster
        .send(GetStats::default())
        .timeout(HEALTH_TIMEOUT)
        .await
    {
        Ok(_) => HttpResponse::Ok().json(serde_json::json!({ "status": "ok" })),
        Err(err) => {
            log::error!("health check failed error={err}");
            HttpResponse::ServiceUnavailable()
                .insert_header((actix_web::http::header::RETRY_AFTER, "1"))
                .json(serde_json::json!({ "error": "the broadcaster does not answer" }))
        }
    }
}

/// 200 while the event log takes publishes; 503 with the reason while it cannot (Redis
/// unreachable or refusing writes, a file store whose commits fail). Open streams stay open
/// meanwhile, and `/healthz` stays 200: the process is fine, its log is not. A load balancer
/// sends publishers elsewhere; subscribers may stay.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if state.ready.is_ready() {
        HttpResponse::Ok().json(serde_json::json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header((actix_web::http::header::RETRY_AFTER, "1"))
            .json(serde_json::json!({ "error": &*state.ready.reason() }))
    }
}
