"""Response models: they make the OpenAPI schema match what the routes really return."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .contract import JOB_STATUSES, PROGRESS_STAGES

JobStatus = Literal[JOB_STATUSES]


class JobError(BaseModel):
    model_config = ConfigDict(extra="allow")
    code: str
    message: str


class Job(BaseModel):
    id: str
    status: JobStatus
    created_at: str = Field(description="RFC 3339, UTC")
    started_at: str | None
    finished_at: str | None
    config: dict[str, Any]
    progress: dict[str, Any] | None = Field(
        description=f"stage ({', '.join(PROGRESS_STAGES)}), stage_index, stages, fraction (of the stage), overall; "
        "while training also epoch, epochs, step, steps, loss, accuracy, images_per_s, lr, eta_seconds; while "
        "evaluating batch, batches")
    metrics: dict[str, Any] | None
    error: JobError | None
    attempts: int
    artifacts: list[dict[str, Any]]
    compare_id: str | None = Field(default=None, description="the compare job this job is a child of")
    arm: str | None = Field(default=None, description="its arm in the compare job")
    seed_index: int | None = Field(default=None, description="its seed's index in the arm (train.seed = base + index)")


class JobList(BaseModel):
    data: list[Job]
    has_more: bool


class CompareChild(BaseModel):
    id: str
    seed_index: int | None
    status: JobStatus
    error: JobError | None


class CompareArm(BaseModel):
    name: str
    control: bool = Field(description="original and relu are the controls every arm is measured against")
    children: list[CompareChild]


class Compare(BaseModel):
    id: str
    status: JobStatus
    created_at: str
    finished_at: str | None
    config: dict[str, Any]
    progress: dict[str, Any] = Field(description="children, ended, fraction (of children ended)")
    arms: list[CompareArm]
    winner: dict[str, Any] | None = Field(description="once succeeded: the best arm better than the relu control, "
                                          "or the control when none is")
    leaderboard: list[dict[str, Any]] | None = Field(description="once succeeded: rank, arm, verdict, mean accuracy "
                                                     "(leaderboard.json has everything)")
    error: JobError | None
    artifacts: list[dict[str, Any]]


class CompareList(BaseModel):
    data: list[Compare]
    has_more: bool


class Event(BaseModel):
    id: str
    created_at: str
    type: str
    level: str
    message: str
    data: dict[str, Any] | None


class EventList(BaseModel):
    data: list[Event]
    has_more: bool


class Artifact(BaseModel):
    name: str
    size: int
    sha256: str
    content_type: str


class ArtifactList(BaseModel):
    data: list[Artifact]


class Param(BaseModel):
    name: str
    identity: float
    paper: float
    doc: str


class Activation(BaseModel):
    name: str
    title: str
    formula: str
    paper: str
    params: list[Param]
    granularities: list[str]
    default_granularity: str | None
    function_preserving: bool
    supports_cap: bool
    kind: str
    onnx_op: str | None
    options: dict[str, Any]
    notes: str


class ActivationList(BaseModel):
    data: list[Activation]


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ok"]
    checks: dict[str, str] = Field(description="database, broker, storage: 'ok' or the failure")
