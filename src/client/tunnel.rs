//! `portcullis db proxy --tunnel`: a local listener on 127.0.0.1 whose connections are carried to
//! the Portcullis proxy over mTLS with the user's certificate, so clients that cannot present a
//! certificate (the AWS CLI, SDKs, GUI tools) connect in the clear to their own machine only.
//! The tunnel opens TLS the way the database's protocol does and then copies bytes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

use super::reach::{Dial, Duplex, Reach};
use crate::authz::identity_from_certificate;
use crate::crd::Protocol;
use crate::pki::ClientFiles;
use crate::proxy::mysql::codec as mysql;
use crate::proxy::postgres::codec as pg;

type TlsStream = tokio_rustls::client::TlsStream<Box<dyn Duplex>>;

/// What the tunnel needs.
pub struct TunnelArgs {
    /// The Database (checked against the certificate's route).
    pub database: String,
    /// The local port (0: any free one).
    pub port: u16,
    /// Where the proxy is and the name its certificate must carry.
    pub reach: Reach,
    /// The directory with client.crt, client.key, ca.crt.
    pub cert_dir: PathBuf,
    /// The database's protocol.
    pub protocol: Protocol,
    /// The db user the user means to use (must be the certificate's, when it names one).
    pub db_user: Option<String>,
}

struct Tunnel {
    dial: Dial,
    protocol: Protocol,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    timeout: Duration,
}

/// A tunnel bound to its local port, not yet serving.
pub struct Bound {
    tunnel: Arc<Tunnel>,
    listener: TcpListener,
    /// The local address clients connect to.
    pub local: SocketAddr,
    /// The db user the certificate names, if any.
    pub db_user: Option<String>,
}

/// Checks the certificate against the database and db user, prepares TLS and binds
/// 127.0.0.1:PORT.
pub async fn bind(args: TunnelArgs) -> anyhow::Result<Bound> {
    let files = ClientFiles::new(&args.cert_dir);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(files.cert())
        .with_context(|| format!("cannot read {}", files.cert().display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate", files.cert().display()))?;
    let leaf = certs.first().with_context(|| format!("{} holds no certificate", files.cert().display()))?;
    let identity = identity_from_certificate(leaf).context("the client certificate is not a Portcullis certificate")?;
    let route = identity.route.clone().unwrap_or_default();
    if let Some(db) = route.database.as_deref()
        && db != args.database
        && !db.ends_with(&format!("/{}", args.database))
    {
        bail!("your certificate is limited to database {db:?}, not {:?}: get one for {:?}", args.database, args.database);
    }
    match (args.db_user.as_deref(), route.db_user.as_deref()) {
        (Some(wanted), Some(cert)) if wanted != cert => {
            bail!("your certificate is for db user {cert:?}, not {wanted:?}: issue one with --db-user {wanted}")
        }
        (Some(wanted), None) if args.protocol == Protocol::Dynamodb => {
            bail!("DynamoDB takes the role from the certificate, and yours names none: issue one with --db-user {wanted}")
        }
        (None, None) if args.protocol == Protocol::Dynamodb => {
            bail!("DynamoDB needs an IAM role: issue a certificate with --db-user ROLE")
        }
        _ => {}
    }
    let key = PrivateKeyDer::from_pem_file(files.key()).with_context(|| format!("cannot read the key {}", files.key().display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(files.ca()).with_context(|| format!("cannot read {}", files.ca().display()))? {
        roots.add(ca.context("the CA file is not PEM")?).context("the CA certificate is unusable")?;
    }
    let config =
        rustls::ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(certs, key).context("the certificate and key do not match")?;
    let name = args.reach.server_name.clone();
    let server_name = ServerName::try_from(name.clone()).with_context(|| format!("{name:?} is not a valid TLS server name"))?;
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await.with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let local = listener.local_addr()?;
    debug!(%local, via = %args.reach.dial.describe(), protocol = %args.protocol, user = %identity.user, "tunnel ready");
    let tunnel = Tunnel {
        dial: args.reach.dial,
        protocol: args.protocol,
        connector: TlsConnector::from(Arc::new(config)),
        server_name,
        timeout: Duration::from_secs(15),
    };
    Ok(Bound { tunnel: Arc::new(tunnel), listener, local, db_user: route.db_user })
}

impl Bound {
    /// Carries connections until `stop` resolves.
    pub async fn serve(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = &mut stop => return,
            };
            let Some((stream, peer)) = crate::runtime::accepted(accepted).await else { continue };
            let tunnel = self.tunnel.clone();
            tokio::spawn(async move {
                if let Err(e) = tunnel.carry(stream, peer).await {
                    warn!(client = %peer, error = format!("{e:#}"), "tunnel connection failed");
                }
            });
        }
    }
}

/// `db proxy --tunnel`: binds, records the port under `~/.portcullis/tunnels/` (for `db env`),
/// writes the AWS profile when asked, prints how to connect, and runs until Ctrl-C.
pub async fn run(args: TunnelArgs, key: &str, aws_profile: Option<(String, String)>) -> anyhow::Result<()> {
    let protocol = args.protocol;
    if aws_profile.is_some() && protocol != Protocol::Dynamodb {
        bail!("--write-aws-profile is for DynamoDB; this Database speaks {protocol}");
    }
    let via = args.reach.dial.describe();
    let bound = bind(args).await?;
    let _record = super::aws_profile::Record::write(key, bound.local)?;
    // Everything is in place before the first line: whoever reads it may use the profile.
    let profile = match aws_profile {
        Some((name, region)) => Some((super::aws_profile::write_profile(&name, bound.local.port(), &region, key)?, name)),
        None => None,
    };
    println!("listening on {}", bound.local);
    println!("carrying each connection to {via}");
    if let Some((path, name)) = profile {
        println!("wrote profile {name} to {}: aws --profile {name} dynamodb list-tables", path.display());
    }
    println!("{}", usage(protocol, bound.local, bound.db_user.as_deref()));
    bound.serve(crate::runtime::wait_for_termination()).await;
    Ok(())
}

/// How to point a client at the tunnel.
fn usage(protocol: Protocol, local: SocketAddr, db_user: Option<&str>) -> String {
    let port = local.port();
    let user = db_user.unwrap_or("DB_USER");
    match protocol {
        Protocol::Postgres => format!("psql \"host=127.0.0.1 port={port} user={user} dbname=DBNAME sslmode=disable\""),
        Protocol::Mysql => format!("mysql -h 127.0.0.1 -P {port} -u {user} --ssl-mode=DISABLED   (mariadb: --skip-ssl)"),
        Protocol::Mongodb => format!("mongosh \"mongodb://127.0.0.1:{port}/?directConnection=true\""),
        Protocol::Dynamodb => format!(
            "AWS_ACCESS_KEY_ID=dummy AWS_SECRET_ACCESS_KEY=dummy aws dynamodb list-tables --endpoint-url http://127.0.0.1:{port}   (any keys: the proxy signs as {user})"
        ),
    }
}

impl Tunnel {
    async fn carry(&self, mut local: TcpStream, peer: SocketAddr) -> anyhow::Result<()> {
        let _ = local.set_nodelay(true);
        let (mut tcp, via) = self.dial.connect(self.timeout).await?;
        debug!(client = %peer, %via, "tunnel connection to the proxy");
        let (mut tls, pending) = match self.protocol {
            Protocol::Postgres => {
                refuse_local_encryption(&mut local).await?;
                tcp.write_all(&pg::encode_ssl_request()).await?;
                let mut answer = [0u8; 1];
                tcp.read_exact(&mut answer).await.context("the proxy closed the connection")?;
                if answer[0] != b'S' {
                    bail!("the proxy refused TLS");
                }
                (self.tls(tcp).await?, Vec::new())
            }
            Protocol::Mysql => self.mysql_login(&mut local, tcp).await?,
            Protocol::Mongodb | Protocol::Dynamodb => (self.tls(tcp).await?, Vec::new()),
        };
        if !pending.is_empty() {
            local.write_all(&pending).await?;
        }
        debug!(client = %peer, "tunnel connection open");
        let (up, down) = tokio::io::copy_bidirectional(&mut local, &mut tls).await.unwrap_or((0, 0));
        let _ = tls.shutdown().await;
        debug!(client = %peer, up, down, "tunnel connection closed");
        Ok(())
    }

    async fn tls(&self, tcp: Box<dyn Duplex>) -> anyhow::Result<TlsStream> {
        tokio::time::timeout(self.timeout, self.connector.connect(self.server_name.clone(), tcp))
            .await
            .context("the TLS handshake with the proxy timed out")?
            .with_context(|| format!("TLS with the proxy failed (does its certificate name {:?}?)", self.server_name.to_str()))
    }

    /// MySQL: the proxy speaks first and the switch to TLS sits inside the login. The local
    /// client sees a greeting without TLS and logs in in the clear; the tunnel makes the
    /// SSLRequest, switches to TLS and sends the client's login through it, then shifts the
    /// sequence id of the answer back by the one packet the client never saw. Returns the
    /// answer to hand the client.
    async fn mysql_login(&self, local: &mut TcpStream, mut tcp: Box<dyn Duplex>) -> anyhow::Result<(TlsStream, Vec<u8>)> {
        let (_, greeting) = read_mysql_packet(&mut tcp).await.context("no greeting from the proxy")?;
        let mut parsed = mysql::Greeting::parse(&greeting).context("the proxy's greeting")?;
        parsed.capabilities &= !mysql::caps::SSL;
        local.write_all(&mysql::packet(0, &parsed.encode())).await?;
        let (_, mut response) = read_mysql_packet(local).await.context("the local client sent no login")?;
        if response.len() < 32 {
            bail!("the local client's login is malformed");
        }
        let caps = u32::from_le_bytes([response[0], response[1], response[2], response[3]]) | mysql::caps::SSL;
        response[..4].copy_from_slice(&caps.to_le_bytes());
        tcp.write_all(&mysql::packet(1, &response[..32])).await?;
        let mut tls = self.tls(tcp).await?;
        tls.write_all(&mysql::packet(2, &response)).await?;
        tls.flush().await?;
        let (seq, answer) = read_mysql_packet(&mut tls).await.context("the proxy did not answer the login")?;
        Ok((tls, mysql::packet(seq.wrapping_sub(1), &answer)))
    }
}

/// PostgreSQL: the local client may ask for TLS or GSSAPI first (`sslmode=prefer`): say no, so
/// it sends its startup message in the clear; the tunnel carries it inside TLS.
async fn refuse_local_encryption(local: &mut TcpStream) -> anyhow::Result<()> {
    loop {
        let mut head = [0u8; 8];
        let mut seen = 0;
        while seen < 8 {
            let n = tokio::time::timeout(Duration::from_secs(30), local.peek(&mut head)).await.context("the local client sent nothing")??;
            if n == 0 {
                bail!("the local client closed the connection");
            }
            if n == seen {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen = n;
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if len == 8 && (code == pg::SSL_REQUEST || code == pg::GSSENC_REQUEST) {
            local.read_exact(&mut head).await?;
            local.write_all(b"N").await?;
            continue;
        }
        return Ok(());
    }
}

async fn read_mysql_packet<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> anyhow::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    let (len, seq) = mysql::header(head);
    if len > mysql::MAX_LOGIN_PACKET {
        bail!("a login packet of {len} bytes");
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    Ok((seq, payload))
}
