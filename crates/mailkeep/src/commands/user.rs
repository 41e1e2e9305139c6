//! `mailkeep user add|list|remove`: the local accounts the web interface
//! will log in against (`mailkeep_web::users`). Every change is recorded in
//! the store's audit log first (the name, role and addresses; never the
//! password).

use super::output::table;
use crate::cli::UserCommand;
use crate::config::Settings;
use crate::exit::{Exit, Failure};
use mailkeep_web::{Role, Users, UsersError};
use serde_json::json;

fn fail(e: UsersError) -> Failure {
    match e {
        UsersError::Refused(why) => Failure::new(Exit::USAGE, why),
        UsersError::Invalid { .. } => Failure::new(Exit::DATAERR, e.to_string()),
        UsersError::Io { ref source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Failure::new(Exit::NOPERM, e.to_string())
        }
        UsersError::Io { .. } => Failure::new(Exit::IOERR, e.to_string()),
    }
}

pub fn run(settings: &Settings, command: UserCommand) -> Result<Exit, Failure> {
    let path = settings.users_file.clone().ok_or_else(|| {
        Failure::new(
            Exit::CONFIG,
            format!(
                "{}: no [store] section and no [web] users_file",
                settings.source
            ),
        )
    })?;
    let users = Users::new(path);
    let audit = settings.audit(&settings.open_store()?)?;
    match command {
        UserCommand::Add(args) => {
            let role = Role::parse(&args.role).ok_or_else(|| {
                Failure::new(
                    Exit::USAGE,
                    format!("--role {:?}: user, auditor or admin", args.role),
                )
            })?;
            let text = std::fs::read_to_string(&args.password_file).map_err(|e| {
                Failure::new(
                    Exit::USAGE,
                    format!("{}: {e}", args.password_file.display()),
                )
            })?;
            let password = text.lines().next().unwrap_or("");
            audit.record(
                "user",
                json!({"op": "add", "name": args.name, "role": role.to_string(), "addresses": args.addresses}),
            )?;
            let user = users
                .put(&args.name, role, &args.addresses, password)
                .map_err(fail)?;
            println!(
                "account {:?} ({}) saved; its mail: {}",
                user.name,
                user.role,
                if user.addresses.is_empty() {
                    "none (no address)".to_string()
                } else {
                    user.addresses.join(", ")
                }
            );
            Ok(Exit::OK)
        }
        UserCommand::List(args) => {
            audit.record("user", json!({"op": "list"}))?;
            let all = users.list().map_err(fail)?;
            if args.json {
                for u in &all {
                    println!(
                        "{}",
                        json!({"name": u.name, "role": u.role.to_string(), "addresses": u.addresses})
                    );
                }
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|u| vec![u.name.clone(), u.role.to_string(), u.addresses.join(", ")])
                    .collect();
                print!("{}", table(&["NAME", "ROLE", "ADDRESSES"], &rows));
            }
            Ok(Exit::OK)
        }
        UserCommand::Remove(args) => {
            audit.record("user", json!({"op": "remove", "name": args.name}))?;
            if users.remove(&args.name).map_err(fail)? {
                println!("account {:?} removed", args.name);
                Ok(Exit::OK)
            } else {
                eprintln!("no account {:?}", args.name);
                Ok(Exit::NOTHING)
            }
        }
    }
}
