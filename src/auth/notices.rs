//! Security notices: the emails a user gets when their 2FA is turned on, changed, off or reset,
//! a recovery code was used, or sign-in was locked. Sent without holding up the request.

use crate::auth::SecondFactor;
use crate::config::AddressSource;
use crate::mail::address::EmailAddress;
use crate::mail::render::{Notice, notice_mail};
use crate::state::Core;
use crate::store::{Store, StoreResult};

/// The address notices go to, where one is known: the email factor's, else the account name
/// when it is the address (`address_source = "username"`).
pub async fn known_address(core: &Core, user: &str) -> StoreResult<Option<String>> {
    if let Some(record) = core.store.two_factor(user).await?
        && record.method == SecondFactor::Email
        && let Some(address) = record.email
    {
        return Ok(Some(address));
    }
    Ok(match core.config.email.address_source {
        AddressSource::Username => EmailAddress::parse(user).map(|a| a.as_str().to_owned()),
        _ => None,
    })
}

/// Tells the user about a security event, without holding up the request (failures are logged).
pub fn notify(core: &Core, user: &str, address: Option<String>, notice: Notice) {
    let Some(address) = address else { return };
    let mail = notice_mail(&core.brand.app_name, &address, user, notice);
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
    let address = known_address(core, user).await?;
    notify(core, user, address, notice);
    Ok(())
}
