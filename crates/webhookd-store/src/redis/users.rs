//! Users and how they sign in: API keys and portal links, each stored by
//! its hash only, all under the `{keys}` hash tag (one cluster slot).

use std::collections::HashMap;

use redis::AsyncCommands;

use super::RedisStore;
use super::rows::redis_error;
use crate::{StoreError, UserSummary};

impl RedisStore {
    pub(super) async fn add_key(
        &self,
        username: &str,
        key_hash: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .scripts
            .add_api_key
            .key(self.users_key())
            .key(self.key_owner_key())
            .key(self.user_keys_key(username))
            .arg(key_hash)
            .arg(username)
            .arg(now)
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    pub(super) async fn user_of_key(&self, key_hash: &str) -> Result<Option<String>, StoreError> {
        self.connection()
            .hget(self.key_owner_key(), key_hash)
            .await
            .map_err(redis_error)
    }

    pub(super) async fn users(&self) -> Result<Vec<UserSummary>, StoreError> {
        let mut connection = self.connection();
        let users: HashMap<String, i64> = connection
            .hgetall(self.users_key())
            .await
            .map_err(redis_error)?;
        let mut names: Vec<_> = users.keys().cloned().collect();
        names.sort();
        if names.is_empty() {
            // An empty pipeline is a client error, not an empty answer.
            return Ok(Vec::new());
        }
        let mut pipeline = redis::pipe();
        for name in &names {
            pipeline.scard(self.user_keys_key(name));
        }
        let key_counts: Vec<usize> = pipeline
            .query_async(&mut connection)
            .await
            .map_err(redis_error)?;
        Ok(names
            .into_iter()
            .zip(key_counts)
            .map(|(username, api_keys)| UserSummary {
                created_at: users[&username],
                username,
                api_keys,
            })
            .collect())
    }

    pub(super) async fn revoke_keys(&self, username: &str) -> Result<usize, StoreError> {
        self.scripts
            .revoke_api_keys
            .key(self.key_owner_key())
            .key(self.user_keys_key(username))
            .key(self.links_key())
            .key(self.user_links_key(username))
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)
    }

    pub(super) async fn add_link(
        &self,
        username: &str,
        token_hash: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<bool, StoreError> {
        let added: i64 = self
            .scripts
            .add_portal_link
            .key(self.users_key())
            .key(self.links_key())
            .key(self.user_links_key(username))
            .arg(username)
            .arg(token_hash)
            .arg(expires_at)
            .arg(now)
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        Ok(added == 1)
    }

    /// [`crate::Store::redeem_portal_link`].
    pub(super) async fn redeem_link(
        &self,
        link_hash: &str,
        session_hash: &str,
        now: i64,
    ) -> Result<Option<(String, i64)>, StoreError> {
        let link: Option<String> = self
            .scripts
            .redeem_portal_link
            .key(self.links_key())
            .arg(link_hash)
            .arg(session_hash)
            .arg(now)
            .arg(self.user_links_key(""))
            .invoke_async(&mut self.connection())
            .await
            .map_err(redis_error)?;
        link.map(|link| {
            link.split_once(' ')
                .and_then(|(expires_at, username)| {
                    Some((username.to_owned(), expires_at.parse::<i64>().ok()?))
                })
                .ok_or_else(|| StoreError::Corrupt(format!("portal link {link:?}")))
        })
        .transpose()
    }

    /// A link is `<expires_at> <username>`; one past its time signs no one
    /// in, even before the next link of its user prunes it.
    pub(super) async fn user_of_link(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let link: Option<String> = self
            .connection()
            .hget(self.links_key(), token_hash)
            .await
            .map_err(redis_error)?;
        let Some(link) = link else {
            return Ok(None);
        };
        let (expires_at, username) = link
            .split_once(' ')
            .and_then(|(expires_at, username)| Some((expires_at.parse::<i64>().ok()?, username)))
            .ok_or_else(|| StoreError::Corrupt(format!("portal link {link:?}")))?;
        Ok((expires_at > now).then(|| username.to_owned()))
    }
}
