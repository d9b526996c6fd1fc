//! A real S3 endpoint for end-to-end tests: `moto_server` from the
//! project's `.venv` (installed by `scripts/test.sh`) on a loopback port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// Credentials moto accepts (any), for the SDK and for `tidemark`.
pub const CREDS: [(&str, &str); 3] =
    [("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_REGION", "us-east-1")];

pub fn moto_bin() -> Option<PathBuf> {
    let p = std::env::var_os("TIDEMARK_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server"));
    p.exists().then_some(p)
}

pub struct Moto {
    child: Child,
    pub url: String,
}

impl Moto {
    pub fn start(bin: &PathBuf) -> Moto {
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "moto_server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, url }
    }

    /// The test's own S3 client of this server (path-style, moto's test keys).
    pub fn client(&self) -> tidemark_s3::S3 {
        tidemark_s3::S3::connect(&tidemark_s3::Endpoint {
            url: Some(self.url.clone()),
            region: "us-east-1".into(),
            path_style: true,
            credentials: tidemark_s3::Credentials::Static {
                access_key_id: "test".into(),
                secret_access_key: "test".into(),
            },
        })
        .unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
