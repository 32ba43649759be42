//! What a running job needs: [`JobContext`] (store, IO calls, budget, bound template, options,
//! control, counters, campaign), built from the store by [`JobContext::load`], and the engine's
//! [`DispatchSettings`].

use std::sync::Arc;
use std::time::Duration;

use super::control::{self, JobControl, SendWindow};
use super::counters::Counters;
use super::error::DispatchError;
use crate::clock::Clock;
use crate::feed::SharedSubscribers;
use crate::io_api::MessagesApi;
use crate::job::{self, BoundTemplate, JobOptions, Template};
use crate::model::job::JobMeta;
use crate::rate::RateBudget;
use crate::store::{CampaignKey, JobId, Store};

/// Give up polling a message this long after its submit (it becomes `poll_expired`).
pub const DEFAULT_POLL_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// Engine settings (from config).
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// Stop polling a message this long after its submit.
    pub poll_deadline: Duration,
    /// Send window of jobs whose template names none (None: always).
    pub send_window: Option<SendWindow>,
    /// Where wall time comes from (send windows).
    pub clock: Clock,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings {
            poll_deadline: DEFAULT_POLL_DEADLINE,
            send_window: None,
            clock: Clock::System,
        }
    }
}

/// Everything a running job needs, shared by its tasks.
pub struct JobContext {
    /// Job id.
    pub job: JobId,
    /// The store.
    pub store: Store,
    /// The IO calls of the send and poll loop (the real client, or a scenario's table).
    pub client: Arc<dyn MessagesApi>,
    /// The shared call budget.
    pub budget: RateBudget,
    /// The bound template (renders messages at send time).
    pub template: BoundTemplate,
    /// Filter, poll policy, priorities.
    pub options: JobOptions,
    /// Engine settings.
    pub settings: DispatchSettings,
    /// Live counts.
    pub counters: Arc<Counters>,
    /// The subscriber set, for `filter = "feed"`.
    pub subscribers: Option<SharedSubscribers>,
    /// Pause, cancel and the send window.
    pub control: Arc<JobControl>,
    /// The campaign whose ledger this job claims each citizen in before sending
    /// ([`super::claim::before_send`]).
    pub campaign: CampaignKey,
    /// `--allow-repeat`: the job sends to citizens another job of the campaign holds too (it
    /// still claims the ones nobody has sent, so other jobs leave them).
    pub allow_repeat: bool,
}

impl JobContext {
    /// Builds the context of an ingested job from the store, seeding the counters.
    /// `subscribers` is required when the job's filter is `feed`.
    pub fn load(
        store: Store,
        job: JobId,
        client: Arc<dyn MessagesApi>,
        budget: RateBudget,
        settings: DispatchSettings,
        subscribers: Option<SharedSubscribers>,
    ) -> Result<JobContext, DispatchError> {
        let meta = JobMeta::load(&store, &job)?
            .ok_or_else(|| DispatchError::UnknownJob(job.to_string()))?;
        let template = Template::from_toml_str(&meta.template_text, &meta.template_path)?;
        let options = template.options();
        let template_campaign = template.campaign().to_owned();
        // The template's own window wins over the default (it was validated at parse).
        let window = match template.send_window() {
            Some(spec) => Some(
                SendWindow::parse(spec, control::DEFAULT_TIMEZONE)
                    .map_err(|e| DispatchError::Unsupported(e.to_string()))?,
            ),
            None => settings.send_window.clone(),
        };
        let control = Arc::new(JobControl::new(window, settings.clock.clone()));
        if meta.cancelled {
            control.cancel();
        } else if meta.paused {
            control.pause();
        }
        let template = template.bind(&meta.header)?;
        if matches!(options.filter, job::FilterMode::Feed)
            && !subscribers.as_ref().is_some_and(|s| s.is_synced())
        {
            return Err(DispatchError::Unsupported(
                "filter = \"feed\" needs a synced subscriber set: run `corriere feed sync` (or use filter = \"profile\")".to_owned(),
            ));
        }
        let counters = Arc::new(Counters::new(job.as_str()));
        for (outcome, n) in store.count_states(&job)? {
            counters.set(outcome, n);
        }
        // A job of a release before campaigns has none stored: its campaign is its subject
        // as written, the same rule (it claims each citizen before sending like any other).
        let campaign = CampaignKey::of(meta.campaign.as_deref().unwrap_or(&template_campaign));
        Ok(JobContext {
            campaign,
            allow_repeat: meta.allow_repeat,
            job,
            store,
            client,
            budget,
            template,
            options,
            settings,
            counters,
            subscribers,
            control,
        })
    }
}

/// The options (filter, poll policy) of a stored job.
pub fn job_options(store: &Store, job: &JobId) -> Result<JobOptions, DispatchError> {
    let meta =
        JobMeta::load(store, job)?.ok_or_else(|| DispatchError::UnknownJob(job.to_string()))?;
    Ok(Template::from_toml_str(&meta.template_text, &meta.template_path)?.options())
}
