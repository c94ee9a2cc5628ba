//! The control socket: `hb-user standby [GROUP]` and `hb-user resume [GROUP]`
//! talk to the running controller over a Unix stream socket in the state dir,
//! root's alone (the state dir is root's and not writable by others; the
//! socket is mode 0600). One request line, one answer line: `ok ...` or
//! `error ...`.

use anyhow::{bail, Context, Result};
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt},
    net::UnixListener,
    sync::{mpsc, oneshot},
};

/// The socket's name in the state dir.
pub const SOCKET: &str = "control.sock";

/// The file in the state dir that remembers which groups are in standby, so
/// that a restart keeps them there.
pub const STANDBY_FILE: &str = "standby";

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Hand over and take nothing: these groups, or every group (None).
    Standby(Option<String>),
    Resume(Option<String>),
}

impl Request {
    fn line(&self) -> String {
        let (verb, group) = match self {
            Request::Standby(g) => ("standby", g),
            Request::Resume(g) => ("resume", g),
        };
        match group {
            Some(g) => format!("{verb} {g}\n"),
            None => format!("{verb}\n"),
        }
    }

    /// A request line, or why it is not one.
    pub fn parse(line: &str) -> Result<Request, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let group = |w: &[&str]| match w {
            [] => Ok(None),
            [g] => Ok(Some(g.to_string())),
            _ => Err(format!("one group at most, got {line:?}")),
        };
        match words.split_first() {
            Some((&"standby", rest)) => group(rest).map(Request::Standby),
            Some((&"resume", rest)) => group(rest).map(Request::Resume),
            _ => Err(format!(
                "expected standby [GROUP] or resume [GROUP], got {line:?}"
            )),
        }
    }
}

/// A request as it reaches the controller's loop, with where its answer goes.
pub type Asked = (Result<Request, String>, oneshot::Sender<String>);

/// The listening socket: connections are read by tasks of their own, so a
/// slow client never holds up the controller's loop.
pub struct Control {
    rx: mpsc::UnboundedReceiver<Asked>,
    task: tokio::task::JoinHandle<()>,
}

impl Control {
    /// Listens on `state_dir`/control.sock, replacing a stale socket a
    /// crashed run left (the state dir's lock says no other controller runs).
    pub fn listen(state_dir: &Path) -> Result<Control> {
        let path = state_dir.join(SOCKET);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
        let l = UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", path.display()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = l.accept().await {
                tokio::spawn(answer(stream, tx.clone()));
            }
        });
        Ok(Control { rx, task })
    }

    /// The next request.
    pub async fn next(&mut self) -> Option<Asked> {
        self.rx.recv().await
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One connection: a request line (a second to send it, 256 bytes at most),
/// the loop's answer, bounded too.
async fn answer(stream: tokio::net::UnixStream, tx: mpsc::UnboundedSender<Asked>) {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut r = tokio::io::BufReader::new(r.take(256));
    let read = r.read_line(&mut line);
    let req = match tokio::time::timeout(Duration::from_secs(1), read).await {
        Ok(Ok(_)) => Request::parse(&line),
        _ => return,
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    if tx.send((req, reply_tx)).is_err() {
        return;
    }
    if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(5), reply_rx).await {
        let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
    }
}

/// Sends `req` to the controller whose state dir is `state_dir`; its answer.
pub fn request(state_dir: &Path, req: &Request) -> Result<String> {
    let path: PathBuf = state_dir.join(SOCKET);
    let mut s = UnixStream::connect(&path)
        .with_context(|| format!("connecting to {} (is hb-user running?)", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(req.line().as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer)?;
    let answer = answer.trim().to_string();
    if answer.is_empty() {
        bail!("hb-user closed the control socket without an answer");
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_print() {
        for r in [
            Request::Standby(None),
            Request::Standby(Some("web".into())),
            Request::Resume(None),
            Request::Resume(Some("db".into())),
        ] {
            assert_eq!(Request::parse(&r.line()), Ok(r));
        }
        assert!(Request::parse("standby a b").is_err());
        assert!(Request::parse("reboot").is_err());
        assert!(Request::parse("").is_err());
    }
}
