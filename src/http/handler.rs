//! The proxy as the server's [`Service`]: each request routed to what answers it (the
//! `/-/` pages, PURGE, the origin cache, or a read-through from a directory), and each
//! response's end counted and logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::access;
use super::admin::admin_page;
use super::body::Body;
use super::conditional;
use super::context::Context;
use super::hit::deliver_hit;
use super::path::{PathError, object_key};
use super::purge::purge;
use super::read_through::{Ask, drain_fill, lookup};
use super::response::{Reply, Source};
use super::server::{Ended, Method, Request, Response, Service};
use super::stats::bump;

impl Service for Context {
    type Tag = Source;

    fn respond(self: Arc<Self>, request: &Request, mut out: Response<'_, Source>) {
        let (reply, source) = respond_to(&self, request);
        let (head, body) = reply.split(source);
        // Counted before the client can see it, so that a client that read it finds it
        // counted.
        self.stats.count_status(head.status);
        out.start(head);
        if !out.wants_body() {
            // A body not sent is dropped here: a transfer still in flight is cancelled.
            return out.end();
        }
        match body {
            // A hit: copied out here if small, else sent from its segment (deliver_hit).
            Body::Cache(body, hit) => {
                let end = hit.end;
                deliver_hit(self, body, hit, end, out)
            }
            // A fill holds a segment: drained here, at storage speed, within the budget.
            Body::Fill(body) => drain_fill(body, out),
            // These hold nothing scarce: read at the client's pace.
            body => out.stream(Box::new(body)),
        }
    }

    fn connection(&self, opened: bool) {
        if opened {
            self.stats.connections_open.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn finished(&self, ended: Ended<'_, Source>) {
        match ended.outcome {
            Ok(bytes) if ended.tag != Source::Proxy => {
                self.stats.bytes_served.fetch_add(*bytes, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(_) => bump(&self.stats.responses_aborted),
        }
        access::log(&access::Record::new(
            ended.request,
            ended.status,
            ended.outcome,
            ended.elapsed,
            ended.tag.as_str(),
        ));
    }

    fn refused(&self, peer: SocketAddr, request: Option<&Request>, status: u16, why: &str) {
        self.stats.count_status(status);
        match request {
            Some(request) => access::log(&access::Record {
                why: Some(why.to_owned()),
                ..access::Record::new(request, status, &Ok(0), Duration::ZERO, "-")
            }),
            None => access::log(&access::Record::refused(peer.ip(), status, why)),
        }
    }
}

fn respond_to(ctx: &Arc<Context>, request: &Request) -> (Reply, Source) {
    if let Some(origin) = ctx.origin()
        && !matches!(&request.method, Method::Other(m) if m == "PURGE")
    {
        if let Ok(key) = object_key(&request.target)
            && let Some(reply) = admin_page(ctx, request, &key)
        {
            return (reply, Source::Proxy);
        }
        return super::origin::respond(ctx, origin, request);
    }
    let head_only = match &request.method {
        Method::Get => false,
        Method::Head => true,
        Method::Other(m) if m == "PURGE" => {
            return (purge(ctx, request), Source::Proxy);
        }
        Method::Other(_) => {
            let reply =
                Reply::text(405, "405 Method Not Allowed\n").with_header("Allow", "GET, HEAD");
            return (reply, Source::Proxy);
        }
    };
    let target = request.target.as_str();
    let key = match object_key(target) {
        Ok(key) => key,
        Err(PathError::TooLong) => return (Reply::text(414, "414 URI Too Long\n"), Source::Proxy),
        Err(PathError::Bad(why)) => {
            log::debug!("{target}: {why}");
            return (Reply::text(400, "400 Bad Request\n"), Source::Proxy);
        }
    };
    // Matched on the normalised key, so no spelling of the path reaches a file instead.
    if let Some(reply) = admin_page(ctx, request, &key) {
        return (reply, Source::Proxy);
    }
    let conditions = conditional::from_headers(
        request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    bump(&ctx.stats.requests);
    let ask = Ask {
        key: &key,
        target,
        conditions: &conditions,
        head_only,
    };
    let (reply, source) = lookup(ctx, &ask);
    bump(if source == Source::Hit {
        &ctx.stats.hits
    } else {
        &ctx.stats.misses
    });
    (reply, source)
}
