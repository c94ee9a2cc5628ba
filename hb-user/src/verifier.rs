//! A verifier refusal as one readable error: the kernel release, the errno and
//! the last lines of the verifier's log, where the reason is (the whole log can
//! run to megabytes, and without it all a user sees is "Invalid argument").

/// Lines of the verifier's log shown.
pub const TAIL: usize = 15;

/// The last `n` non-empty lines of `log`.
pub fn tail(log: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// The error for a program the kernel refused to load.
pub fn refusal(release: &str, io_error: &std::io::Error, log: &str) -> String {
    let lines = tail(log, TAIL);
    if lines.is_empty() {
        return format!(
            "kernel {release} refused hb's XDP program ({io_error}); the verifier left no log"
        );
    }
    let shown: Vec<String> = lines.iter().map(|l| format!("  {l}")).collect();
    format!(
        "kernel {release} refused hb's XDP program ({io_error}); the verifier's last lines:\n{}",
        shown.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_non_empty_lines() {
        let log: String = (1..=40).map(|i| format!("{i}: insn\n\n")).collect();
        let t = tail(&log, TAIL);
        assert_eq!(t.len(), TAIL);
        assert_eq!(t[0], "26: insn");
        assert_eq!(t[TAIL - 1], "40: insn");
        assert_eq!(tail("a\n \nb\n", 15), ["a", "b"]);
    }

    #[test]
    fn refusal_names_the_release_the_errno_and_the_last_lines() {
        let e = std::io::Error::from_raw_os_error(libc::EACCES);
        let log = "0: (b7) r0 = 0\n1: (95) exit\nR0 !read_ok\nprocessed 2 insns\n";
        assert_eq!(
            refusal("6.1.0-27-cloud-amd64", &e, log),
            "kernel 6.1.0-27-cloud-amd64 refused hb's XDP program (Permission denied (os error 13)); \
             the verifier's last lines:\n  0: (b7) r0 = 0\n  1: (95) exit\n  R0 !read_ok\n  processed 2 insns"
        );
        assert!(refusal("6.12.9+deb12-cloud-amd64", &e, "").ends_with("the verifier left no log"));
    }
}
