//! The agent's connection to the server, retried while the failure is a passing one.
//!
//! A busy server (sshd's `MaxStartups` dropping unauthenticated connections when many
//! hosts poll at once), a refused or a timed-out connection: the agent tries again after
//! a jittered, growing delay ([`crate::agent::backoff`]) until the run's deadline, and only then
//! gives up, `interrupted`. A host-key mismatch or a refused login is one error at once.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::agent::config::AgentConfig;
use crate::agent::error::AgentError;
use crate::s3::client::Client;
use crate::s3::credentials::S3Credentials;
use crate::s3::dir::S3Root;
use crate::server_url::ServerUrl;
use crate::sftp::{ConnectError, SftpTransport, SshTarget};
use crate::transport::{FileTransport, Transport};

/// Connects to the server, retrying passing failures until `deadline`; operations still
/// waiting at `deadline` fail.
pub(crate) fn connect(config: &AgentConfig, deadline: Instant) -> Result<Box<dyn Transport>, AgentError> {
    let mut transport: Box<dyn Transport> = match config.server.clone() {
        ServerUrl::Local(root) => Box::new(FileTransport::new(&root, &config.host)),
        ServerUrl::S3(url) => {
            let path = config.s3_credentials.clone().unwrap_or_default();
            let credentials =
                S3Credentials::from_file(&path, "default").map_err(AgentError::S3Credentials)?;
            let timeout = Duration::from_secs(config.connect_timeout.max(1) * 3);
            let patience = deadline.saturating_duration_since(std::time::Instant::now());
            let client = Client::new(&url, &credentials, timeout, patience);
            let root = S3Root::new(url, client);
            Box::new(root.host(&config.host))
        }
        ServerUrl::Sftp { user, address, port } => {
            // ssh would skip an unreadable key and the server then refuse the login: say
            // what is wrong here instead.
            std::fs::File::open(&config.identity).map_err(|source| AgentError::Identity {
                path: config.identity.clone(),
                source,
            })?;
            let target = SshTarget {
                user,
                address,
                port,
                identity: Some(config.identity.clone()),
                known_hosts: config.known_hosts.clone(),
                connect_timeout: Duration::from_secs(config.connect_timeout),
                ssh: config.ssh.clone(),
            };
            Box::new(retrying(config, deadline, || SftpTransport::connect(&target))?)
        }
    };
    transport.set_deadline(deadline);
    Ok(transport)
}

/// Calls `attempt` until it succeeds, fails for good, or the deadline passes.
fn retrying<T>(
    config: &AgentConfig,
    deadline: Instant,
    mut attempt: impl FnMut() -> Result<T, ConnectError>,
) -> Result<T, AgentError> {
    let mut tries = 0u32;
    loop {
        let e = match attempt() {
            Ok(t) => return Ok(t),
            Err(e) if !e.transient => return Err(AgentError::Connect(e)),
            Err(e) => e,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = crate::agent::backoff::delay(tries, crate::agent::backoff::jitter()).min(left);
        tries += 1;
        if left.is_zero() {
            return Err(AgentError::Unreachable {
                host: config.host.clone(),
                run_timeout: config.run_timeout,
                tries,
                last: e,
            });
        }
        // Best effort: a closed stderr does not end the run. The first retry says how long
        // this may go on (a wrong address or port looks like a busy server until then).
        let until = if tries == 1 {
            format!(
                "; retried until the run's deadline, {} s from now (run_timeout = {} s): if the \
                 server stays unreachable, check agent.toml's server address and port",
                left.as_secs(),
                config.run_timeout
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            std::io::stderr().lock(),
            "bento: {e}; retrying in {:.1} s (attempt {} before the run's deadline){until}",
            wait.as_secs_f64(),
            tries + 1
        );
        std::thread::sleep(wait);
    }
}
