//! `corriere service …` and `corriere organization …`: one subcommand per /manage/services
//! operation of the spec (manage key), the preflight (`service check`), and the preflight gate
//! `corriere send` calls before its first send ([`gate_job`]).
//!
//! Output: data (ids, tables, JSON) on standard output, messages on standard error. Keys are
//! printed by `service keys show` only, which exists for that.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use corriere::config::Config;
use corriere::io_api::{ApiKey, CmsServiceLifecycle, IoClient, IoClientConfig, IoError, KeyType};
use corriere::service::logo::read_logo;
use corriere::service::payload::load_service_file;
use corriere::service::preflight::{self, missing_mandatory, JobFacts, PreflightSettings};
use corriere::service::ServiceError;

/// Which service a command acts on.
#[derive(Debug, Clone, Args)]
pub struct ServiceIdArg {
    /// Service id (default: io.service_id).
    #[arg(long)]
    pub service_id: Option<String>,
}

/// `corriere service check`
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Service id (default: io.service_id).
    #[arg(long)]
    pub service_id: Option<String>,
    /// Our public address as IO sees it (default: io.source_ip), checked against
    /// authorized_cidrs.
    #[arg(long)]
    pub source_ip: Option<IpAddr>,
    /// A job's template: check what this job needs (payments, ADVANCED).
    #[arg(long, short, requires = "recipients")]
    pub template: Option<PathBuf>,
    /// The job's recipients CSV (targets against authorized_recipients).
    #[arg(long, short, requires = "template")]
    pub recipients: Option<PathBuf>,
    /// Skip the POST /profiles probe of the service key.
    #[arg(long)]
    pub no_probe: bool,
}

/// Which key to regenerate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WhichKey {
    /// The primary key.
    Primary,
    /// The secondary key.
    Secondary,
}

/// `corriere service keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print the service's primary and secondary keys IN CLEAR (cmsGetServiceKeys). This is the
    /// only command that prints a key.
    Show(ServiceIdArg),
    /// Regenerate one key (cmsRegenerateServiceKey); the new key is not printed (`keys show`).
    Rotate {
        /// primary or secondary.
        which: WhichKey,
        #[command(flatten)]
        id: ServiceIdArg,
    },
}

/// `corriere service logo …`
#[derive(Debug, Subcommand)]
pub enum LogoCommand {
    /// Upload the service logo, a 300×300 PNG checked locally first (cmsUpdateServiceLogo).
    Upload {
        /// The PNG file.
        file: PathBuf,
        #[command(flatten)]
        id: ServiceIdArg,
    },
}

/// `corriere service …`
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Preflight: everything that would make a campaign fail or look wrong, in one table
    /// (exit 65 when something blocks).
    Check(CheckArgs),
    /// List the services of the manage key (cmsGetServices).
    List {
        /// Page size (1-100).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        /// First item.
        #[arg(long, default_value_t = 0)]
        offset: u32,
        /// Print IO's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a service: data, lifecycle, publication (cmsGetService, cmsGetPublishedService).
    Show {
        #[command(flatten)]
        id: ServiceIdArg,
        /// Print IO's JSON (editable and accepted back by `update`).
        #[arg(long)]
        json: bool,
    },
    /// Create a service from a TOML or JSON file, validated first (cmsCreateService); prints
    /// the new id.
    Create {
        /// The service file (.toml or .json).
        file: PathBuf,
    },
    /// Replace a service's data from a TOML or JSON file (cmsUpdateService; 409 while in
    /// review).
    Update {
        /// The service file (.toml or .json).
        file: PathBuf,
        #[command(flatten)]
        id: ServiceIdArg,
    },
    /// Delete a service for good (cmsDeleteService).
    Delete {
        #[command(flatten)]
        id: ServiceIdArg,
        /// Confirms the deletion.
        #[arg(long)]
        yes: bool,
    },
    /// The service's API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The service logo.
    Logo {
        #[command(subcommand)]
        command: LogoCommand,
    },
    /// Submit the service for review by PagoPA (cmsReviewService): draft → submitted.
    Review {
        #[command(flatten)]
        id: ServiceIdArg,
        /// Publish it as soon as it is approved.
        #[arg(long)]
        auto_publish: bool,
    },
    /// Publish an approved service: visible in App IO (cmsReleaseService).
    Publish(ServiceIdArg),
    /// Withdraw a published service from App IO (cmsUnpublishService).
    Unpublish(ServiceIdArg),
    /// The service's lifecycle and publication history (cmsGetServiceHistory).
    History {
        #[command(flatten)]
        id: ServiceIdArg,
        /// Items (1-100).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
        /// Oldest first.
        #[arg(long)]
        asc: bool,
    },
    /// The topics a service may have (getServiceTopics).
    Topics,
}

/// `corriere organization logo …`
#[derive(Debug, Subcommand)]
pub enum OrganizationLogoCommand {
    /// Upload the organization logo, a 300×300 PNG checked locally first
    /// (uploadOrganizationLogo, with the service key).
    Upload {
        /// The PNG file.
        file: PathBuf,
        /// The organization's 11-digit fiscal code.
        #[arg(long)]
        fiscal_code: String,
    },
}

/// `corriere organization …`
#[derive(Debug, Subcommand)]
pub enum OrganizationCommand {
    /// The organization logo.
    Logo {
        #[command(subcommand)]
        command: OrganizationLogoCommand,
    },
}

/// What a command needs from IO.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keys {
    Manage,
    Service,
    /// The service key, and the manage key when configured.
    Both,
}

fn client(config: &Config, keys: Keys) -> Result<IoClient, ServiceError> {
    let manage_key = config
        .io
        .manage_key
        .as_ref()
        .map(|k| ApiKey::new(k.expose()));
    if keys == Keys::Manage && manage_key.is_none() {
        return Err(ServiceError::NoManageKey);
    }
    let api_key = match (&config.io.api_key, keys) {
        (Some(k), _) => ApiKey::new(k.expose()),
        (None, Keys::Service | Keys::Both) => return Err(ServiceError::NoApiKey),
        // Manage calls never send the service key.
        (None, Keys::Manage) => ApiKey::new(""),
    };
    Ok(IoClient::new(IoClientConfig {
        base_url: config.io.base_url.clone(),
        api_key,
        manage_key,
        request_timeout: config.io.request_timeout,
        connect_timeout: config.io.connect_timeout,
        pool_max_idle_per_host: config.io.pool_max_idle_per_host,
    })?)
}

fn service_id(config: &Config, arg: &ServiceIdArg) -> Result<String, ServiceError> {
    arg.service_id
        .clone()
        .or_else(|| config.io.service_id.clone())
        .ok_or(ServiceError::NoServiceId)
}

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("IO's answers serialize")
}

/// Runs `corriere service …`.
pub async fn run_service(config: &Config, command: ServiceCommand) -> Result<(), ServiceError> {
    match command {
        ServiceCommand::Check(args) => check(config, args).await,
        ServiceCommand::List {
            limit,
            offset,
            json: as_json,
        } => {
            let page = client(config, Keys::Manage)?
                .cms_get_services(limit, offset)
                .await?;
            if as_json {
                println!("{}", json(&page));
            } else {
                println!("{:<26}  {:<10}  NAME", "ID", "LIFECYCLE");
                for s in &page.value {
                    println!("{:<26}  {:<10}  {}", s.id, s.status.value, s.data.name);
                }
                if let Some(p) = &page.pagination {
                    eprintln!(
                        "{} of {} (offset {})",
                        page.value.len(),
                        p.get("count").unwrap_or(&serde_json::Value::Null),
                        offset
                    );
                }
            }
            Ok(())
        }
        ServiceCommand::Show { id, json: as_json } => {
            let id = service_id(config, &id)?;
            let io = client(config, Keys::Manage)?;
            let s = io.cms_get_service(&id).await?;
            let publication = publication_of(&io, &id).await?;
            if as_json {
                println!("{}", json(&s));
            } else {
                print_service(&s, &publication);
            }
            Ok(())
        }
        ServiceCommand::Create { file } => {
            let payload = load_service_file(&file)?;
            let created = client(config, Keys::Manage)?
                .cms_create_service(&payload)
                .await?;
            eprintln!("created service {} ({})", created.id, created.status.value);
            warn_incomplete(&created);
            println!("{}", created.id);
            Ok(())
        }
        ServiceCommand::Update { file, id } => {
            let id = service_id(config, &id)?;
            let payload = load_service_file(&file)?;
            // 409 while in review: IO's detail says so ("Service status is incompatible with
            // update action").
            let updated = client(config, Keys::Manage)?
                .cms_update_service(&id, &payload)
                .await?;
            eprintln!("updated service {} ({})", updated.id, updated.status.value);
            warn_incomplete(&updated);
            Ok(())
        }
        ServiceCommand::Delete { id, yes } => {
            let id = service_id(config, &id)?;
            if !yes {
                return Err(ServiceError::NeedsConfirmation(format!(
                    "deleting service {id} cannot be undone: re-run with --yes"
                )));
            }
            client(config, Keys::Manage)?
                .cms_delete_service(&id)
                .await?;
            eprintln!("deleted service {id}");
            Ok(())
        }
        ServiceCommand::Keys { command } => keys(config, command).await,
        ServiceCommand::Logo {
            command: LogoCommand::Upload { file, id },
        } => {
            let id = service_id(config, &id)?;
            // Checked before any call: a wrong file never reaches IO.
            let png = read_logo(&file)?;
            client(config, Keys::Manage)?
                .cms_update_service_logo(&id, &png)
                .await?;
            eprintln!("uploaded the logo of service {id} ({})", file.display());
            Ok(())
        }
        ServiceCommand::Review { id, auto_publish } => {
            let id = service_id(config, &id)?;
            let io = client(config, Keys::Manage)?;
            io.cms_review_service(&id, auto_publish).await?;
            let s = io.cms_get_service(&id).await?;
            eprintln!("submitted service {id} for review");
            println!("{}", lifecycle_line(&s));
            Ok(())
        }
        ServiceCommand::Publish(id) => {
            let id = service_id(config, &id)?;
            let io = client(config, Keys::Manage)?;
            io.cms_release_service(&id).await?;
            println!("published (servizio attivo)");
            Ok(())
        }
        ServiceCommand::Unpublish(id) => {
            let id = service_id(config, &id)?;
            client(config, Keys::Manage)?
                .cms_unpublish_service(&id)
                .await?;
            println!("unpublished");
            Ok(())
        }
        ServiceCommand::History { id, limit, asc } => {
            let id = service_id(config, &id)?;
            let h = client(config, Keys::Manage)?
                .cms_get_service_history(&id, !asc, limit, None)
                .await?;
            for item in &h.items {
                let get = |p: &str| item.pointer(p).and_then(|v| v.as_str()).unwrap_or("");
                let reason = get("/status/reason");
                println!(
                    "{:<24}  {:<11}  {:<11}  {}",
                    get("/last_update"),
                    get("/status/kind"),
                    get("/status/value"),
                    reason
                );
            }
            if h.continuation_token.is_some() {
                eprintln!("(more: raise --limit)");
            }
            Ok(())
        }
        ServiceCommand::Topics => {
            let t = client(config, Keys::Manage)?.get_service_topics().await?;
            for topic in &t.topics {
                println!("{:>3}  {}", topic.id, topic.name);
            }
            Ok(())
        }
    }
}

async fn keys(config: &Config, command: KeysCommand) -> Result<(), ServiceError> {
    match command {
        KeysCommand::Show(id) => {
            let id = service_id(config, &id)?;
            let k = client(config, Keys::Manage)?
                .cms_get_service_keys(&id)
                .await?;
            // The one place a key is printed: this command exists for it.
            println!("primary_key    {}", k.primary_key);
            println!("secondary_key  {}", k.secondary_key);
        }
        KeysCommand::Rotate { which, id } => {
            let id = service_id(config, &id)?;
            let key = match which {
                WhichKey::Primary => KeyType::Primary,
                WhichKey::Secondary => KeyType::Secondary,
            };
            client(config, Keys::Manage)?
                .cms_regenerate_service_key(&id, key)
                .await?;
            eprintln!(
                "regenerated the {} key of service {id}; the old one no longer works. \
                 `corriere service keys show` prints the new one",
                key.as_str()
            );
        }
    }
    Ok(())
}

/// Runs `corriere organization …`.
pub async fn run_organization(
    config: &Config,
    command: OrganizationCommand,
) -> Result<(), ServiceError> {
    match command {
        OrganizationCommand::Logo {
            command: OrganizationLogoCommand::Upload { file, fiscal_code },
        } => {
            if !corriere::service::payload::is_organization_fiscal_code(&fiscal_code) {
                return Err(corriere::service::ServiceFileError {
                    path: file,
                    problems: vec![corriere::service::FieldProblem {
                        field: "--fiscal-code".to_owned(),
                        reason: "must be the organization's 11-digit fiscal code".to_owned(),
                    }],
                }
                .into());
            }
            let png = read_logo(&file)?;
            client(config, Keys::Service)?
                .upload_organization_logo(&fiscal_code, &png)
                .await?;
            eprintln!(
                "uploaded the logo of organization {fiscal_code} ({})",
                file.display()
            );
            Ok(())
        }
    }
}

/// `published`, `unpublished` or `never published`.
async fn publication_of(io: &IoClient, id: &str) -> Result<String, ServiceError> {
    match io.cms_get_published_service(id).await {
        Ok(p) => Ok(p.status),
        Err(IoError::NotFound { .. }) => Ok("never published".to_owned()),
        Err(e) => Err(e.into()),
    }
}

fn lifecycle_line(s: &CmsServiceLifecycle) -> String {
    let reason = s.status.reason.as_deref().unwrap_or("");
    let gloss = match s.status.value.as_str() {
        "submitted" => " (in review)",
        // The guide's words, unless IO's reason already says them.
        "rejected" if !reason.to_lowercase().contains("dati incompleti") => {
            " (dati incompleti o incorretti)"
        }
        _ => "",
    };
    match &s.status.reason {
        Some(r) => format!("{}{gloss}: {r}", s.status.value),
        None => format!("{}{gloss}", s.status.value),
    }
}

fn print_service(s: &CmsServiceLifecycle, publication: &str) {
    let d = &s.data;
    let m = &d.metadata;
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let rows: Vec<(&str, String)> = vec![
        ("id", s.id.clone()),
        ("lifecycle", lifecycle_line(s)),
        ("publication", publication.to_owned()),
        ("last_update", opt(&s.last_update)),
        ("name", d.name.clone()),
        ("description", d.description.clone()),
        (
            "organization",
            format!("{} ({})", d.organization.name, d.organization.fiscal_code),
        ),
        ("department", opt(&d.organization.department_name)),
        ("scope", opt(&m.scope)),
        (
            "topic",
            m.topic
                .as_ref()
                .map(|t| format!("{} {}", t.id, t.name))
                .or(m.topic_id.map(|t| t.to_string()))
                .unwrap_or_else(|| "-".to_owned()),
        ),
        ("privacy_url", opt(&m.privacy_url)),
        ("phone", opt(&m.phone)),
        ("email", opt(&m.email)),
        ("pec", opt(&m.pec)),
        ("support_url", opt(&m.support_url)),
        ("authorized_cidrs", d.authorized_cidrs.join(", ")),
        (
            "authorized_recipients",
            format!("{} fiscal code(s)", d.authorized_recipients.len()),
        ),
        (
            "max_allowed_payment_amount",
            format!("{} cents", d.max_allowed_payment_amount.unwrap_or(0)),
        ),
    ];
    for (k, v) in rows {
        println!("{k:<27} {v}");
    }
    let missing = missing_mandatory(d);
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|m| m.0).collect();
        eprintln!("missing for production (guide §4.1): {}", names.join(", "));
    }
}

/// After create/update: what review would reject.
fn warn_incomplete(s: &CmsServiceLifecycle) {
    let missing = missing_mandatory(&s.data);
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|m| m.0).collect();
        eprintln!(
            "warning: missing for production (guide §4.1), review will reject it: {}",
            names.join(", ")
        );
    }
}

async fn check(config: &Config, args: CheckArgs) -> Result<(), ServiceError> {
    let io = client(config, Keys::Both)?;
    let mut settings = PreflightSettings::from(config);
    if args.service_id.is_some() {
        settings.service_id = args.service_id;
    }
    settings.probe = !args.no_probe;
    let source_ip = args.source_ip.or(config.io.source_ip);
    let facts = match (&args.template, &args.recipients) {
        (Some(t), Some(r)) => JobFacts::from_files(t, r, source_ip)?,
        _ => JobFacts::without_job(source_ip),
    };
    let report = preflight::check(&io, &settings, &facts).await;
    // The table is the output; the log would only repeat it.
    print!("{}", report.table());
    report.refusal()
}
