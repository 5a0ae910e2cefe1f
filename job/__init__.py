"""The job: its spec (``job.spec``) and the stages every rank runs (``job.stages``)."""
