//! A network namespace of a test's own, for what must not touch the machine's: firewall
//! rules, addresses, routes. Needs root (CAP_SYS_ADMIN); callers skip with a message
//! otherwise ([`is_root`]).
//!
//! The namespace belongs to the calling thread only. Everything that thread starts from
//! then on is inside it: servers it binds (the protocol fakes), threads it spawns, and
//! processes it runs, which inherit it. The test's other threads are not affected.

use std::process::Command;

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Moves the calling thread into a new, empty network namespace with `lo` up.
pub fn enter_new() {
    // SAFETY: NEWNET unshares only the network namespace; the unsafety of unshare is in
    // FILES, which is not asked for.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .expect("unshare(CLONE_NEWNET): a network namespace needs root");
    ip(&["link", "set", "lo", "up"]);
}

/// Runs `ip ARGS` (iproute2) in the calling thread's namespace; panics if it fails.
pub fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .expect("ip (iproute2) runs");
    assert!(status.success(), "ip {}: {status}", args.join(" "));
}

/// A pod's network as the kubelet leaves it: `eth0` with an address and a default route
/// to a gateway that never answers, so that traffic to an address nothing local serves
/// (169.254.169.254) leaves through `eth0` and goes unanswered.
pub fn pod_network() {
    ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "host0",
    ]);
    ip(&["addr", "add", "10.244.0.7/24", "dev", "eth0"]);
    ip(&["link", "set", "eth0", "up"]);
    ip(&["link", "set", "host0", "up"]);
    ip(&["route", "add", "default", "via", "10.244.0.1"]);
}
