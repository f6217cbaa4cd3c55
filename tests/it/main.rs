//! One integration-test binary: every test drives the real `portok` binary against its own
//! temporary state dir and port, with real backends on loopback.

mod support;

mod anyapp;
mod devcmd;
mod devservers;
mod docker;
mod docs;
mod dx;
mod errors;
mod fast;
mod fuzz_regressions;
mod grpc;
mod grpc_tonic;
mod grpc_web;
mod hardening;
mod inspect;
mod lan;
mod observe;
mod pipeline;
mod pool;
mod ports;
mod proxy;
mod reload;
mod run;
mod tcp;
mod tls;
mod up;
