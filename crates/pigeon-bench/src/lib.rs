//! Pigeon's benchmark harness, behind `pigeon bench <scenario>`.
//!
//! A scenario starts what it needs (a fresh `pigeon serve`, and Mosquitto or Redis when it
//! compares), drives the load from separate agent processes (`pigeon bench agent`, spread
//! over 127.0.0.x source addresses and under each process's 20k-descriptor limit), prints a
//! Markdown table and exits. Peers are run the same way, on the same machine, in the same run.

pub mod agent;
pub mod apns;
pub mod audience;
pub mod callbacks;
pub mod cluster;
pub mod fanout;
pub mod geofence;
pub mod httpload;
pub mod mqtt;
pub mod procs;
pub mod pushapi;
pub mod resp;
pub mod restart;
pub mod slowloris;
pub mod table;
pub mod wsclient;
