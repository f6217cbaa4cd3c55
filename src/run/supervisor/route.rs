//! What the supervisor tells the daemon about its app: the route (the ports in rotation
//! and the state), the process groups it holds, and how each redeploy ended.

use super::super::daemon_link;
use super::Supervisor;
use crate::metrics::RedeployOutcome;
use crate::routes::{Route, RouteState};
use std::time::Duration;

impl Supervisor {
    /// Ports in rotation: the ready instances, in slot order.
    pub(super) fn ready_ports(&self) -> Vec<u16> {
        self.slots
            .iter()
            .filter_map(|s| s.running.as_ref().filter(|i| i.ready))
            .map(|i| i.gen.port)
            .collect()
    }

    pub(super) fn slot_ports(&self) -> Vec<u16> {
        self.slots
            .iter()
            .filter_map(|s| s.running.as_ref().map(|i| i.gen.port))
            .collect()
    }

    /// Every port an instance of ours listens on (so a new one is not given it).
    pub(super) fn ports_in_use(&self) -> Vec<u16> {
        let mut v = self.slot_ports();
        v.extend(
            self.slots
                .iter()
                .flat_map(|s| &s.kept)
                .map(|k| k.inst.gen.port),
        );
        if let Some((_, i)) = self.rollout.as_ref().and_then(|r| r.next.as_ref()) {
            v.push(i.gen.port);
        }
        v
    }

    /// The process group of every instance we hold (each leads its own group).
    fn pgids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self
            .slots
            .iter()
            .filter_map(|s| s.running.as_ref().map(|i| i.gen.pid as i32))
            .collect();
        v.extend(
            self.slots
                .iter()
                .flat_map(|s| &s.kept)
                .map(|k| k.inst.gen.pid as i32),
        );
        if let Some((_, i)) = self.rollout.as_ref().and_then(|r| r.next.as_ref()) {
            v.push(i.gen.pid as i32);
        }
        v
    }

    pub(super) async fn update_pgids(&self) {
        daemon_link::set_pgids(&self.state, &self.launch.hostname, self.pgids()).await;
    }

    /// Make the route match the ready instances: live with their ports, or starting.
    pub(super) async fn sync_route(&mut self) {
        let ports = self.ready_ports();
        let state = if ports.is_empty() {
            RouteState::Starting
        } else {
            RouteState::Live
        };
        if self.written.as_ref() == Some(&(ports.clone(), state)) {
            self.update_pgids().await;
            return;
        }
        // A single instance's route names the generation it serves (or is starting).
        let shown = |ready: bool| {
            self.slots
                .iter()
                .filter_map(|s| s.running.as_ref())
                .find(|i| i.ready == ready)
                .map(|i| (i.gen.port, i.gen.n))
        };
        let (port, n) = shown(true)
            .or_else(|| shown(false))
            .unwrap_or((self.opts.fixed_port.unwrap_or(0), self.gen));
        self.write_route(ports, state, port, n, None).await;
    }

    /// Nothing is running: the route shows the crash page, with why and the last output.
    pub(super) async fn mark_crashed(
        &mut self,
        port: u16,
        n: u64,
        message: String,
        tail: Vec<String>,
    ) {
        self.write_route(
            Vec::new(),
            RouteState::Crashed,
            port,
            n,
            Some((message, tail)),
        )
        .await;
    }

    /// Write our route and wait until the daemon has applied it. A pool's route lists its
    /// ports; a single instance's route is the plain one-port route.
    pub(super) async fn write_route(
        &mut self,
        ports: Vec<u16>,
        route_state: RouteState,
        port: u16,
        n: u64,
        crash: Option<(String, Vec<String>)>,
    ) {
        self.written = Some((ports.clone(), route_state));
        let base = self
            .opts
            .route(&self.launch.hostname, port, n, route_state, self.pgids());
        let route = if self.single() {
            base
        } else {
            Route {
                instances: Some(self.slots.len() as u32),
                port: ports.first().copied().unwrap_or(port),
                ports,
                ..base
            }
        };
        daemon_link::publish(&self.state, self.launch.proxy_port, route, crash).await;
    }

    /// Tell the daemon how a redeploy ended: history, metrics, and an event that dashboards
    /// and live-reload pages listen to.
    pub(super) async fn report(
        &self,
        outcome: RedeployOutcome,
        generation: u64,
        reason: &str,
        took: Duration,
        detail: Option<String>,
        tail: Vec<String>,
    ) {
        let req = daemon_link::redeploy_request(
            &self.launch.hostname,
            outcome,
            generation,
            reason,
            took,
            detail,
            tail,
        );
        daemon_link::tell_daemon(&self.state, req).await;
    }
}
