//! A static probe for `tests/sandbox.rs`: tries the system calls a container must not have and
//! prints `name=ok` or `name=errno<N>` for each. Built by the test with `rustc` alone (no crate
//! dependencies, static, so it runs in a busybox image with no C library); x86_64 numbers.
#![allow(unsafe_code)]

use std::ffi::c_long;
use std::io::Error;

unsafe extern "C" {
    fn syscall(number: c_long, ...) -> c_long;
}

fn report(name: &str, result: c_long) {
    if result < 0 {
        println!("{name}=errno{}", Error::last_os_error().raw_os_error().unwrap_or(0));
    } else {
        println!("{name}=ok");
    }
}

fn main() {
    let user = c"user".as_ptr();
    let description = c"tpod-probe".as_ptr();
    let payload = b"secret";
    let io_uring_params = [0u8; 120];
    let perf_attr = [0u8; 128];
    // SAFETY: every pointer is to live memory of the size the call reads; results are only printed.
    unsafe {
        // KEY_SPEC_PROCESS_KEYRING = -2
        report("add_key", syscall(248, user, description, payload.as_ptr(), payload.len(), -2 as c_long));
        // KEYCTL_GET_KEYRING_ID of KEY_SPEC_SESSION_KEYRING (-3)
        report("keyctl", syscall(250, 0 as c_long, -3 as c_long, 0 as c_long));
        report("request_key", syscall(249, user, description, 0 as c_long, 0 as c_long));
        report("unshare_user", syscall(272, 0x1000_0000 as c_long));
        report("unshare_net", syscall(272, 0x4000_0000 as c_long));
        report("unshare_mount", syscall(272, 0x0002_0000 as c_long));
        report("clone3", syscall(435, 0 as c_long, 0 as c_long));
        report("io_uring_setup", syscall(425, 4 as c_long, io_uring_params.as_ptr()));
        report("bpf", syscall(321, 0 as c_long, 0 as c_long, 0 as c_long));
        report("perf_event_open", syscall(298, perf_attr.as_ptr(), 0 as c_long, -1 as c_long, -1 as c_long, 0 as c_long));
        report("mount", syscall(165, c"none".as_ptr(), c"/mnt".as_ptr(), c"tmpfs".as_ptr(), 0 as c_long, 0 as c_long));
        report("ptrace", syscall(101, 16 as c_long, 1 as c_long, 0 as c_long, 0 as c_long));
        // socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), socket(AF_PACKET, SOCK_RAW, 0), AF_VSOCK
        report("raw_socket", syscall(41, 2 as c_long, 3 as c_long, 1 as c_long));
        report("packet_socket", syscall(41, 17 as c_long, 3 as c_long, 0 as c_long));
        report("vsock", syscall(41, 40 as c_long, 1 as c_long, 0 as c_long));
        // Controls: these must work.
        report("tcp_socket", syscall(41, 2 as c_long, 1 as c_long, 0 as c_long));
        report("getpid", syscall(39));
    }
    println!("probe=done");
}
