//! Sending email: codes for the email method and security notices. Transports: SMTP through
//! lettre (rustls; STARTTLS, implicit TLS, or plain for a local relay; AUTH; pooled), `file`
//! (`.eml` files for operators who pipe mail elsewhere) and `log` (the demo: codes printed to
//! the console and kept in a local outbox page; refused anywhere else).

pub mod address;
pub mod render;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{EmailConfig, MailTransport, SmtpTls};
pub use render::{Mail, MailKind, Notice};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("the message could not be built: {0}")]
    Build(String),
    #[error("delivery failed: {0}")]
    Delivery(String),
}

/// The demo's outbox: the last mails "sent", newest first.
#[derive(Clone, Default)]
pub struct Outbox(Arc<Mutex<VecDeque<Mail>>>);

const OUTBOX_KEEP: usize = 50;

impl Outbox {
    fn push(&self, mail: Mail) {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        q.push_front(mail);
        q.truncate(OUTBOX_KEEP);
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(PathBuf),
    Log(Outbox),
}

pub struct Mailer {
    from: Mailbox,
    transport: Transport,
    /// Longest a whole SMTP exchange may take (`[email.smtp] timeout`).
    send_timeout: std::time::Duration,
}

impl Mailer {
    pub fn from_config(config: &EmailConfig) -> anyhow::Result<Self> {
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("email.from {:?} is not an address: {e}", config.from))?;
        let transport = match config.transport {
            MailTransport::Log => Transport::Log(Outbox::default()),
            MailTransport::File => {
                let dir = config.file_dir.clone().ok_or_else(|| {
                    anyhow::anyhow!("email.file_dir is needed for transport = \"file\"")
                })?;
                Transport::File(dir)
            }
            MailTransport::Smtp => Transport::Smtp(smtp_transport(config)?),
        };
        Ok(Self {
            from,
            transport,
            send_timeout: config.smtp.timeout,
        })
    }

    /// The outbox page's mails, when running with the `log` transport.
    pub fn outbox(&self) -> Option<&Outbox> {
        match &self.transport {
            Transport::Log(o) => Some(o),
            _ => None,
        }
    }

    pub async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e| MailError::Build(format!("recipient: {e}")))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
            .map_err(|e| MailError::Build(e.to_string()))?;
        match &self.transport {
            // lettre's own timeout covers connecting and single reads, not a server that keeps
            // the dialogue going (seen with a refused AUTH): the whole send is bounded here.
            Transport::Smtp(t) => {
                match tokio::time::timeout(self.send_timeout, t.send(message)).await {
                    Ok(sent) => sent
                        .map(|_| ())
                        .map_err(|e| MailError::Delivery(smtp_error(&e))),
                    Err(_) => Err(MailError::Delivery("timed out".into())),
                }
            }
            Transport::File(dir) => {
                let name = format!(
                    "{}-{}.eml",
                    unix_millis(),
                    crate::secrets::random_below(1 << 32)
                );
                tokio::fs::write(dir.join(name), message.formatted())
                    .await
                    .map_err(|e| MailError::Delivery(format!("{}: {e}", dir.display())))
            }
            Transport::Log(outbox) => {
                // The demo's whole point is to show the code without a mail server.
                #[allow(clippy::print_stdout)]
                {
                    println!(
                        "\n  [demo outbox] to {}: {}\n  {}\n",
                        mail.to,
                        mail.subject,
                        mail.text.trim().replace("\r\n", "\n  ")
                    );
                }
                outbox.push(mail.clone());
                Ok(())
            }
        }
    }
}

fn smtp_transport(config: &EmailConfig) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let smtp = &config.smtp;
    let tls = || -> anyhow::Result<TlsParameters> {
        let mut builder = TlsParameters::builder(smtp.host.clone());
        if let Some(path) = &smtp.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("email.smtp.ca_file {}: {e}", path.display()))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("email.smtp.ca_file {}: {e}", path.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        builder
            .build_rustls()
            .map_err(|e| anyhow::anyhow!("email.smtp TLS: {e}"))
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
        .port(smtp.port)
        .timeout(Some(smtp.timeout));
    builder = match smtp.tls {
        SmtpTls::None => builder.tls(Tls::None),
        SmtpTls::StartTls => builder.tls(Tls::Required(tls()?)),
        SmtpTls::Tls => builder.tls(Tls::Wrapper(tls()?)),
    };
    if let Some(user) = &smtp.username {
        let password = smtp
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    Ok(builder.build())
}

/// What went wrong, without the server's text (it may echo addresses or content).
fn smtp_error(e: &lettre::transport::smtp::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if let Some(code) = e.status() {
        format!("server answered {code}")
    } else if e.is_tls() {
        "TLS failed".into()
    } else {
        "connection failed".into()
    }
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}
