//! An app's callback endpoints as its operator manages them, for every door: adding one
//! (its URL checked against the operator's address policy), removing, re-enabling one the
//! dispatcher disabled, and its dead letters. What an endpoint is made of (its format and
//! commands, its signing secret) is the callback dispatcher's; events are the engine's
//! (`events.rs`). The engine's copy of an app's endpoints is refreshed from storage as
//! before (`Engine::refresh_callbacks`).

use crate::app::AppState;
use crate::{now_ms, Engine, EngineError};

pub use pigeon_store::{CallbackBatch, CallbackEndpoint, CallbackFormat};

impl Engine {
    /// An app's callback endpoints, push-level ones included.
    pub async fn callback_endpoints(
        &self,
        app: &AppState,
    ) -> Result<Vec<CallbackEndpoint>, EngineError> {
        let all = self.store.list_callbacks().await?;
        Ok(all
            .into_iter()
            .filter(|e| e.app_key == app.app_key)
            .collect())
    }

    /// One callback endpoint of an app.
    pub async fn callback_endpoint(
        &self,
        app: &AppState,
        id: u64,
    ) -> Result<Option<CallbackEndpoint>, EngineError> {
        let all = self.store.list_callbacks().await?;
        Ok(all
            .into_iter()
            .find(|e| e.id == id && e.app_key == app.app_key))
    }

    /// Stores a new endpoint and returns its id, once its URL passed the operator's address
    /// policy for callbacks (refused as `Invalid`, naming the field `url`).
    pub async fn add_callback_endpoint(
        &self,
        endpoint: CallbackEndpoint,
    ) -> Result<u64, EngineError> {
        let policy = self.private_networks().callbacks_policy();
        pigeon_core::net::check_url(&endpoint.url, "url", &policy)
            .await
            .map_err(EngineError::Invalid)?;
        Ok(self.store.add_callback(endpoint).await?)
    }

    /// Removes an endpoint of an app; false if it had none of that id.
    pub async fn remove_callback_endpoint(
        &self,
        app: &AppState,
        id: u64,
    ) -> Result<bool, EngineError> {
        Ok(self.store.remove_callback(&app.app_key, id).await?)
    }

    /// Lets an endpoint disabled for failing too long get events again, from now on; false
    /// if the app has no endpoint of that id.
    pub async fn enable_callback_endpoint(
        &self,
        app: &AppState,
        id: u64,
    ) -> Result<bool, EngineError> {
        Ok(self.store.enable_callback(&app.app_key, id).await?)
    }

    /// An endpoint's dead-lettered batches: those that failed for longer than the
    /// dead-letter time.
    pub async fn dead_letters(
        &self,
        endpoint: &CallbackEndpoint,
    ) -> Result<Vec<CallbackBatch>, EngineError> {
        let batches = self.store.callback_batches(endpoint.id).await?;
        Ok(batches.into_iter().filter(|b| b.dead).collect())
    }

    /// Sends a dead-lettered batch of an endpoint again; false if it has no dead batch of
    /// that delivery id.
    pub async fn replay_dead_letter(
        &self,
        endpoint: &CallbackEndpoint,
        delivery_id: &str,
    ) -> Result<bool, EngineError> {
        Ok(self
            .store
            .replay_batch(endpoint.id, delivery_id, now_ms())
            .await?)
    }

    /// An endpoint's batches still to be sent or retried (not dead-lettered): how far it
    /// lags.
    pub async fn pending_batches(
        &self,
        endpoint: &CallbackEndpoint,
    ) -> Result<Vec<CallbackBatch>, EngineError> {
        let batches = self.store.callback_batches(endpoint.id).await?;
        Ok(batches.into_iter().filter(|b| !b.dead).collect())
    }
}
