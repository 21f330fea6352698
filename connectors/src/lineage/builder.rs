//! [`RunEvents`]: the events of one run of one job, with the job and run facets filled in.

use super::model::{
    ErrorMessageRunFacet, EventType, InputDataset, Job, JobFacets, JobTypeJobFacet, OutputDataset,
    ProcessingEngineRunFacet, RUN_EVENT_SCHEMA_URL, Run, RunEvent, RunFacets, producer,
};
use chrono::Utc;
use uuid::Uuid;

/// A new run id: a UUID v7, so ids sort by start time.
pub fn new_run_id() -> Uuid {
    Uuid::now_v7()
}

/// The `processingType` of the job: a CDC pipeline streams; a one-shot snapshot, a flat-file
/// load or a consistency check is a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProcessingType {
    #[default]
    Streaming,
    Batch,
}

impl ProcessingType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessingType::Streaming => "STREAMING",
            ProcessingType::Batch => "BATCH",
        }
    }
}

/// Builds the events of one run. `start` remembers its inputs and outputs; later events
/// repeat the inputs and, unless given new ones, the outputs, so each terminal event is
/// complete on its own for consumers that read only those.
#[derive(Debug, Clone)]
pub struct RunEvents {
    job_namespace: String,
    job_name: String,
    run_id: Uuid,
    processing: ProcessingType,
    inputs: Vec<InputDataset>,
    outputs: Vec<OutputDataset>,
}

impl RunEvents {
    pub fn new(
        job_namespace: impl Into<String>,
        job_name: impl Into<String>,
        run_id: Uuid,
    ) -> Self {
        Self {
            job_namespace: job_namespace.into(),
            job_name: job_name.into(),
            run_id,
            processing: ProcessingType::default(),
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    pub fn with_processing_type(mut self, processing: ProcessingType) -> Self {
        self.processing = processing;
        self
    }

    pub fn run_id(&self) -> Uuid {
        self.run_id
    }

    /// START, with the run's inputs and outputs (remembered for the later events).
    pub fn start(&mut self, inputs: Vec<InputDataset>, outputs: Vec<OutputDataset>) -> RunEvent {
        self.inputs = inputs;
        self.outputs = outputs;
        self.event(EventType::Start, self.outputs.clone(), None)
    }

    /// RUNNING: progress of a streaming run; `outputs` (typically with statistics so far)
    /// replace the remembered outputs in this event when not empty.
    pub fn running(&self, outputs: Vec<OutputDataset>) -> RunEvent {
        let outputs = self.or_remembered(outputs);
        self.event(EventType::Running, outputs, None)
    }

    /// COMPLETE, with the outputs carrying their `outputStatistics`.
    pub fn complete(&self, outputs_with_stats: Vec<OutputDataset>) -> RunEvent {
        let outputs = self.or_remembered(outputs_with_stats);
        self.event(EventType::Complete, outputs, None)
    }

    /// FAIL, with an `errorMessage` run facet.
    pub fn fail(&self, message: impl Into<String>) -> RunEvent {
        self.fail_with_trace(message, None)
    }

    /// FAIL with a stack trace (or the error's source chain) in the `errorMessage` facet.
    pub fn fail_with_trace(&self, message: impl Into<String>, trace: Option<String>) -> RunEvent {
        self.event(
            EventType::Fail,
            self.outputs.clone(),
            Some(ErrorMessageRunFacet::new(message, trace)),
        )
    }

    /// ABORT: the run was stopped (a drain on shutdown) without completing.
    pub fn abort(&self) -> RunEvent {
        self.event(EventType::Abort, self.outputs.clone(), None)
    }

    fn or_remembered(&self, outputs: Vec<OutputDataset>) -> Vec<OutputDataset> {
        if outputs.is_empty() {
            self.outputs.clone()
        } else {
            outputs
        }
    }

    fn event(
        &self,
        event_type: EventType,
        outputs: Vec<OutputDataset>,
        error: Option<ErrorMessageRunFacet>,
    ) -> RunEvent {
        RunEvent {
            event_type,
            event_time: Utc::now(),
            producer: producer().to_string(),
            schema_url: RUN_EVENT_SCHEMA_URL.to_string(),
            run: Run {
                run_id: self.run_id,
                facets: RunFacets {
                    error_message: error,
                    processing_engine: Some(ProcessingEngineRunFacet::syncmesh()),
                    other: Default::default(),
                },
            },
            job: Job {
                namespace: self.job_namespace.clone(),
                name: self.job_name.clone(),
                facets: JobFacets {
                    job_type: Some(JobTypeJobFacet::new(self.processing.as_str())),
                    other: Default::default(),
                },
            },
            inputs: self.inputs.clone(),
            outputs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_share_the_run_and_remember_datasets() {
        let mut run = RunEvents::new("syncmesh://prod", "ledger-sync", new_run_id());
        let start = run.start(
            vec![InputDataset::new("oracle://db:1521", "BANK.ACCOUNTS")],
            vec![OutputDataset::new("mysql://dw:3306", "dw.accounts")],
        );
        let done = run.complete(vec![
            OutputDataset::new("mysql://dw:3306", "dw.accounts").with_statistics(42, None),
        ]);
        let failed = run.fail("boom");
        assert_eq!(start.run.run_id, done.run.run_id);
        assert_eq!(start.event_type, EventType::Start);
        assert_eq!(done.inputs.len(), 1);
        assert_eq!(
            done.outputs[0]
                .output_facets
                .output_statistics
                .as_ref()
                .unwrap()
                .row_count,
            Some(42)
        );
        assert_eq!(
            failed.run.facets.error_message.as_ref().unwrap().message,
            "boom"
        );
        assert_eq!(failed.outputs.len(), 1);
        let json = serde_json::to_value(&done).unwrap();
        assert_eq!(json["eventType"], "COMPLETE");
        assert_eq!(json["job"]["facets"]["jobType"]["integration"], "SYNCMESH");
        assert_eq!(json["schemaURL"], RUN_EVENT_SCHEMA_URL);
        let back: RunEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, done);
    }
}
