//! Reading on a background thread: documents flow to the tokenizer in batches, in file order,
//! while the next batch is read and decompressed.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use indicatif::ProgressBar;

use crate::sources::{read_file, Document, ReadOptions, Skipped, SourceFile, SourceSummary};

/// Everything reading produced besides the documents.
#[derive(Debug, Clone, Default)]
pub struct ReadReport {
    pub sources: Vec<SourceSummary>,
    pub skipped: Vec<Skipped>,
}

impl ReadReport {
    pub fn documents(&self) -> u64 {
        self.sources.iter().map(|s| s.documents).sum()
    }
    pub fn text_bytes(&self) -> u64 {
        self.sources.iter().map(|s| s.text_bytes).sum()
    }
}

/// Documents read on a background thread, in file order, handed over in batches of about
/// `batch_bytes` so that reading and decompression overlap tokenization.
pub struct DocumentStream {
    receiver: Receiver<Vec<Document>>,
    reader: Option<JoinHandle<ReadReport>>,
}

impl DocumentStream {
    pub fn spawn(
        files: Vec<SourceFile>,
        options: ReadOptions,
        batch_bytes: usize,
        progress: ProgressBar,
    ) -> Self {
        // Two batches in flight: one being tokenized, one being read.
        let (sender, receiver) = sync_channel::<Vec<Document>>(2);
        let reader = std::thread::spawn(move || {
            let mut report = ReadReport::default();
            let mut batch = Vec::new();
            let mut batch_len = 0usize;
            let mut open = true;
            for (index, file) in files.iter().enumerate() {
                let mut emit = |doc: Document| -> bool {
                    batch_len += doc.text.len();
                    batch.push(doc);
                    if batch_len >= batch_bytes {
                        batch_len = 0;
                        open = sender.send(std::mem::take(&mut batch)).is_ok();
                    }
                    open
                };
                let summary = read_file(
                    index,
                    file,
                    &options,
                    &progress,
                    &mut emit,
                    &mut report.skipped,
                );
                report.sources.push(summary);
                if !open {
                    break;
                }
            }
            if open && !batch.is_empty() {
                let _ = sender.send(batch);
            }
            report
        });
        DocumentStream {
            receiver,
            reader: Some(reader),
        }
    }

    /// Wait for the reader and return its report (call after the stream is drained).
    pub fn finish(mut self) -> ReadReport {
        // Dropping the receiver first unblocks a reader whose consumer stopped early.
        let DocumentStream { receiver, reader } = &mut self;
        drop(std::mem::replace(receiver, sync_channel(0).1));
        match reader.take().map(|h| h.join()) {
            Some(Ok(report)) => report,
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => ReadReport::default(),
        }
    }
}

impl Iterator for DocumentStream {
    type Item = Vec<Document>;
    fn next(&mut self) -> Option<Vec<Document>> {
        self.receiver.recv().ok()
    }
}
