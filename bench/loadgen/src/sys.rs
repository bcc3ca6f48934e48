//! The few Linux facilities the load generator needs beyond std: epoll, CPU pinning, the
//! descriptor limit, connecting from a chosen source address, and reading another process's
//! CPU time and RSS from /proc.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Duration;

pub struct Epoll(RawFd);

impl Epoll {
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; a negative result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    /// Adds (`add`) or changes the interest set of `fd`, tagging its events with `token`.
    pub fn ctl(&self, add: bool, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let op = if add {
            libc::EPOLL_CTL_ADD
        } else {
            libc::EPOLL_CTL_MOD
        };
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a valid epoll_event that outlives the call; fds are checked by the kernel.
        if unsafe { libc::epoll_ctl(self.0, op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn del(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer (null is allowed since Linux 2.6.9).
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> io::Result<usize> {
        let cap = events.len().min(i32::MAX as usize) as i32;
        // SAFETY: the kernel writes at most `cap` entries into `events`, which has that many.
        let n = unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), cap, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(n as usize)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own this descriptor and close it exactly once.
        unsafe { libc::close(self.0) };
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data, zeroed is the empty set; CPU_SET bounds-checks `cpu`
    // against the set's size, and sched_setaffinity reads exactly size_of::<cpu_set_t>() bytes.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raises RLIMIT_NOFILE to at least `want` (up to the hard limit, or beyond it when privileged).
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the kernel to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: `raised` is a valid rlimit read by the kernel.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(want);
    }
    let capped = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim.rlim_max)
}

/// User + system CPU seconds used so far by process `pid` ("self" for this one), all threads.
pub fn cpu_seconds(pid: &str) -> io::Result<f64> {
    cpu_split(pid).map(|(user, system)| user + system)
}

/// [`cpu_seconds`] as (user, system): the system part is the kernel's work for the process
/// (for a server under fan-out, mostly the TCP sends).
pub fn cpu_split(pid: &str) -> io::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces and parentheses: fields are counted after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> u64 { f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0) };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((field(11) as f64 / hz, field(12) as f64 / hz))
}

/// CPU seconds (user + system) used so far by each thread of process `pid`: (thread id,
/// thread name, seconds). Threads that end meanwhile are simply missing.
pub fn thread_cpu_seconds(pid: &str) -> io::Result<Vec<(String, String, f64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let tid = entry?.file_name().to_string_lossy().into_owned();
        let task = format!("{pid}/task/{tid}");
        let (Ok(name), Ok(secs)) = (
            std::fs::read_to_string(format!("/proc/{task}/comm")),
            cpu_seconds(&task),
        ) else {
            continue;
        };
        out.push((tid, name.trim_end().to_string(), secs));
    }
    Ok(out)
}

/// Resident set size of process `pid` in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS"))
}

/// A TCP connection to `to` from the address `from` (blocking, at most `timeout`). The port is
/// chosen at connect time (IP_BIND_ADDRESS_NO_PORT), per address and destination, so each
/// source address has the whole ephemeral range towards one server port.
pub fn connect_from(from: Ipv4Addr, to: SocketAddrV4, timeout: Duration) -> io::Result<TcpStream> {
    let sockaddr = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns; the stream closes it on every path.
    let tcp = unsafe { TcpStream::from_raw_fd(fd) };
    // A blocking connect on Linux gives up after SO_SNDTIMEO.
    tcp.set_write_timeout(Some(timeout))?;
    set_option(
        &tcp,
        libc::IPPROTO_IP,
        libc::IP_BIND_ADDRESS_NO_PORT,
        &(1 as libc::c_int),
    )?;
    let (src, dst) = (sockaddr(SocketAddrV4::new(from, 0)), sockaddr(to));
    // SAFETY: `src` is a valid sockaddr_in of `len` bytes, read by the kernel.
    if unsafe {
        libc::bind(
            tcp.as_raw_fd(),
            (&src as *const libc::sockaddr_in).cast(),
            len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as for bind, with the destination.
    let r = unsafe {
        libc::connect(
            tcp.as_raw_fd(),
            (&dst as *const libc::sockaddr_in).cast(),
            len,
        )
    };
    if r == 0 {
        return Ok(tcp);
    }
    let e = io::Error::last_os_error();
    Err(match e.raw_os_error() {
        Some(libc::EINPROGRESS) => io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
        _ => e,
    })
}

/// setsockopt(2) of `value` (an option's plain C value: an int, a `linger`) on `sock`.
pub fn set_option<T: Copy>(
    sock: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised `T` of the size given; the kernel copies it, and
    // `sock` is an open socket its owner keeps for the call.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
