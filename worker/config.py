"""The job config schema lives in service/job_config.py: the API validates a job with it before
queueing, and must not import worker code. The pipeline reads the same names from here."""

from service.job_config import *  # noqa: F403
