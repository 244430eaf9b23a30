"""The durable job queue: jobs kept in the metadata database, claimed under leases, recorded once."""

from modelport.queue.jobs import JobQueue, NewJob, Outcome, job_info

__all__ = ["JobQueue", "NewJob", "Outcome", "job_info"]
