//! A human's decisions about a shadow table: promote it in place of the table, roll the
//! promotion back, or release the table it replaced. Used by `syncmesh shadow` and by the
//! worker when `spec.sink.shadow.promote` is set.
//!
//! | action | allowed when the breaker is | swap | after |
//! |---|---|---|---|
//! | promote | open or half-open, shadow exists, no `<table>_old` | `table` → `<table>_old`, `<table>_shadow` → `table` | promoted |
//! | rollback | promoted, `<table>_old` exists | `table` → `<table>_shadow`, `<table>_old` → `table` | open |
//! | release | promoted | drop `<table>_old`, clear the journal | closed |
//!
//! The swap is one `RENAME TABLE` on MySQL/MariaDB, `SWAP WITH` plus a rename on StarRocks and
//! two renames in one transaction on PostgreSQL and SQLite; a reader never finds the table
//! missing. The control row is moved first, with a guard that waits for a diverted write in
//! flight and keeps new ones out: on PostgreSQL and SQLite in the same transaction as the
//! renames; on MySQL and StarRocks (whose DDL commits) through the intermediate `swapping`
//! state, which writers wait out. An interrupted swap (a crash between the steps) is finished
//! by running the same command again.

use super::shadow::{DurableState, ShadowTable};
use super::{TableSinkError, TableWriter};

/// Why an action was refused, or what failed.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    #[error("{action} of {table} refused: {reason}")]
    Refused {
        action: &'static str,
        table: String,
        reason: String,
    },
    #[error(transparent)]
    Sink(#[from] TableSinkError),
}

/// What an action did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShadowOutcome {
    pub action: &'static str,
    pub table: String,
    /// The breaker's durable state afterwards.
    pub state: String,
    /// The table now in place (its content came from this table).
    pub in_place_from: String,
    /// Where the table that was in place went (dropped on release).
    pub previous: String,
    /// The statements that swapped or dropped tables.
    pub statements: Vec<String>,
}

const DIVERTING: [DurableState; 2] = [DurableState::Open, DurableState::HalfOpen];

fn refused(action: &'static str, st: &ShadowTable, reason: impl Into<String>) -> ShadowError {
    ShadowError::Refused {
        action,
        table: st.table.to_string(),
        reason: reason.into(),
    }
}

/// Swaps the shadow in place of the table; the table is kept as `<table>_old`.
pub async fn promote(w: &TableWriter, st: &ShadowTable) -> Result<ShadowOutcome, ShadowError> {
    const A: &str = "promotion";
    let row = w.control_row(st).await?.ok_or_else(|| {
        refused(
            A,
            st,
            "its breaker never opened, so there is no shadow table to promote",
        )
    })?;
    let resuming = row.state == DurableState::Swapping && row.reason.as_deref() == Some(A);
    match row.state {
        DurableState::Open | DurableState::HalfOpen => {}
        _ if resuming => {}
        DurableState::Closed => {
            return Err(refused(
                A,
                st,
                "the breaker is closed and nothing is pending: the table is in use as it is",
            ));
        }
        DurableState::Promoted => {
            return Err(refused(
                A,
                st,
                format!(
                    "the shadow is already promoted; release `{}` or roll back first",
                    st.old
                ),
            ));
        }
        DurableState::Swapping => {
            return Err(refused(
                A,
                st,
                format!(
                    "a {} is in progress or was interrupted; run it again to finish it",
                    row.reason.unwrap_or_default()
                ),
            ));
        }
    }
    let shadow_exists = w.table_exists(&st.shadow).await?;
    let old_exists = w.table_exists(&st.old).await?;
    if resuming && !shadow_exists && old_exists {
        // The renames happened before the interruption: only the bookkeeping is left.
        w.set_state(st, DurableState::Promoted, A, &[DurableState::Swapping])
            .await?;
        return Ok(outcome(
            A,
            st,
            DurableState::Promoted,
            &st.shadow,
            &st.old,
            vec![],
        ));
    }
    if !shadow_exists {
        return Err(refused(
            A,
            st,
            format!("the shadow table `{}` does not exist", st.shadow),
        ));
    }
    if old_exists {
        return Err(refused(
            A,
            st,
            format!(
                "`{}` exists from an earlier promotion: release it first (syncmesh shadow release)",
                st.old
            ),
        ));
    }
    let from: &[DurableState] = if resuming {
        &[DurableState::Swapping]
    } else {
        &DIVERTING
    };
    let swap = w.dialect().swap_sql(&st.table, &st.shadow, &st.old);
    swap_tables(w, st, A, from, DurableState::Promoted, &swap, vec![]).await?;
    Ok(outcome(
        A,
        st,
        DurableState::Promoted,
        &st.shadow,
        &st.old,
        swap,
    ))
}

/// Puts the replaced table back; the promoted one becomes the shadow again and the breaker
/// opens: writes go on to the shadow, and the journal (kept since the breaker first opened)
/// replays into the table when it recovers.
pub async fn rollback(w: &TableWriter, st: &ShadowTable) -> Result<ShadowOutcome, ShadowError> {
    const A: &str = "rollback";
    let row = w
        .control_row(st)
        .await?
        .ok_or_else(|| refused(A, st, "its breaker never opened: nothing was promoted"))?;
    let resuming = row.state == DurableState::Swapping && row.reason.as_deref() == Some(A);
    if row.state != DurableState::Promoted && !resuming {
        return Err(refused(
            A,
            st,
            format!(
                "only a promoted shadow can be rolled back; the breaker is {}",
                row.state
            ),
        ));
    }
    let shadow_exists = w.table_exists(&st.shadow).await?;
    let old_exists = w.table_exists(&st.old).await?;
    if resuming && shadow_exists && !old_exists {
        w.set_state(st, DurableState::Open, A, &[DurableState::Swapping])
            .await?;
        return Ok(outcome(
            A,
            st,
            DurableState::Open,
            &st.old,
            &st.shadow,
            vec![],
        ));
    }
    if !old_exists {
        return Err(refused(
            A,
            st,
            format!(
                "the previous table `{}` does not exist (was it released?)",
                st.old
            ),
        ));
    }
    if shadow_exists {
        return Err(refused(
            A,
            st,
            format!(
                "`{}` exists, so the promoted table cannot be moved back to it",
                st.shadow
            ),
        ));
    }
    let from: &[DurableState] = if resuming {
        &[DurableState::Swapping]
    } else {
        &[DurableState::Promoted]
    };
    let swap = w.dialect().swap_sql(&st.table, &st.old, &st.shadow);
    swap_tables(w, st, A, from, DurableState::Open, &swap, vec![]).await?;
    Ok(outcome(
        A,
        st,
        DurableState::Open,
        &st.old,
        &st.shadow,
        swap,
    ))
}

/// Drops the table a promotion replaced and the journal kept for a rollback; the breaker
/// closes.
pub async fn release(w: &TableWriter, st: &ShadowTable) -> Result<ShadowOutcome, ShadowError> {
    const A: &str = "release";
    let row = w
        .control_row(st)
        .await?
        .ok_or_else(|| refused(A, st, "its breaker never opened: nothing was promoted"))?;
    if row.state != DurableState::Promoted {
        return Err(refused(
            A,
            st,
            format!(
                "only a promoted shadow's previous table can be released; the breaker is {}",
                row.state
            ),
        ));
    }
    let drop = w.dialect().drop_sql(&st.old);
    // Close first (guarded, with the journal cleared in the same transaction), then drop: a
    // crash in between leaves `<table>_old`, which the next promotion names.
    let stmts = vec![
        w.set_state_statement(st, DurableState::Closed, A, &[DurableState::Promoted]),
        w.journal_clear_statement(st),
    ];
    if w.run_guarded(&st.control, &stmts, true).await?.is_none() {
        return Err(refused(
            A,
            st,
            "the breaker state changed meanwhile; look again",
        ));
    }
    w.run_guarded(&st.old, &[(drop.clone(), vec![])], false)
        .await?;
    Ok(outcome(
        A,
        st,
        DurableState::Closed,
        &st.table,
        &st.old,
        vec![drop],
    ))
}

fn outcome(
    action: &'static str,
    st: &ShadowTable,
    state: DurableState,
    from: &super::TableName,
    previous: &super::TableName,
    statements: Vec<String>,
) -> ShadowOutcome {
    ShadowOutcome {
        action,
        table: st.table.to_string(),
        state: state.as_str().into(),
        in_place_from: from.to_string(),
        previous: previous.to_string(),
        statements,
    }
}

/// Moves the control row from `from` to `to` around the swap statements (see the module docs).
async fn swap_tables(
    w: &TableWriter,
    st: &ShadowTable,
    action: &'static str,
    from: &[DurableState],
    to: DurableState,
    swap: &[String],
    mut extra: Vec<super::control::Statement>,
) -> Result<(), ShadowError> {
    let raw = |sql: &String| (sql.clone(), vec![]);
    if w.dialect().transactional_ddl() {
        let mut stmts = vec![w.set_state_statement(st, to, action, from)];
        stmts.extend(swap.iter().map(raw));
        stmts.append(&mut extra);
        if w.run_guarded(&st.table, &stmts, true).await?.is_none() {
            return Err(refused(
                action,
                st,
                "the breaker state changed meanwhile; look again",
            ));
        }
        return Ok(());
    }
    if !from.contains(&DurableState::Swapping)
        && !w
            .set_state(st, DurableState::Swapping, action, from)
            .await?
    {
        return Err(refused(
            action,
            st,
            "the breaker state changed meanwhile; look again",
        ));
    }
    let mut stmts: Vec<_> = swap.iter().map(raw).collect();
    stmts.append(&mut extra);
    w.run_guarded(&st.table, &stmts, false).await?;
    w.set_state(st, to, action, &[DurableState::Swapping])
        .await?;
    Ok(())
}
