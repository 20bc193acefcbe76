//! Security notices: the emails a user gets when their 2FA is turned on, changed, off or reset,
//! a recovery code was used, or sign-in was locked. Sent without holding up the request.

use crate::auth::SecondFactor;
use crate::config::AddressSource;
use crate::mail::address::EmailAddress;
use crate::mail::render::{Notice, notice_mail};
use crate::records::Records;
use crate::records::TwoFactorRecord;
use crate::state::Core;
use crate::store::StoreResult;
use crate::words::Language;

/// Where a user's notices go, and in which language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: String,
    pub language: Language,
}

/// Where notices go, where an address is known: the email factor's, else the account name
/// when it is the address (`address_source = "username"`); in the language the user enabled
/// 2FA in (`[ui] language` decides when pinned or when none is known).
pub async fn recipient(core: &Core, user: &str) -> StoreResult<Option<Recipient>> {
    let record = core.records.two_factor(user).await?;
    let language = core
        .config
        .ui
        .language
        .for_user(record.as_ref().and_then(|r| r.language));
    let address = match record {
        Some(TwoFactorRecord {
            method: SecondFactor::Email,
            email: Some(address),
            ..
        }) => Some(address),
        _ => match core.config.email.address_source {
            AddressSource::Username => EmailAddress::parse(user).map(|a| a.as_str().to_owned()),
            _ => None,
        },
    };
    Ok(address.map(|address| Recipient { address, language }))
}

/// Tells the user about a security event, without holding up the request (failures are logged).
pub fn notify(core: &Core, user: &str, to: Option<Recipient>, notice: Notice) {
    let Some(to) = to else { return };
    let w = to.language.words();
    let mail = notice_mail(w, &core.brand.app_name, &to.address, user, notice);
    let mailer = core.mailer.clone();
    let metrics = core.metrics.clone();
    let user = user.to_owned();
    tokio::spawn(async move {
        match mailer.send(&mail).await {
            Ok(()) => metrics.email("notice", "sent"),
            Err(e) => {
                metrics.email("notice", "failed");
                tracing::warn!(user, error = %e, "could not send a security notice");
            }
        }
    });
}

/// [`notify`] to whatever address is known for the user.
pub async fn notify_known(core: &Core, user: &str, notice: Notice) -> StoreResult<()> {
    let to = recipient(core, user).await?;
    notify(core, user, to, notice);
    Ok(())
}
