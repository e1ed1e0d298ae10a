"""A/B experiments: define, run, stop, and read their results (admin scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.api.deps import ServicesDep
from app.api.responses import AUTH_ERRORS, Responses, error_response
from app.auth import RequireAdmin
from app.experiments.service import ExperimentAdmin
from app.schemas import (
    ExperimentIn,
    ExperimentListOut,
    ExperimentNamePath,
    ExperimentOut,
    ExperimentResultsOut,
    ExperimentStatus,
)

router = APIRouter(prefix="/v1/experiments", tags=["experiments"], dependencies=[RequireAdmin])


async def get_admin(services: ServicesDep) -> ExperimentAdmin:
    return ExperimentAdmin(
        services.settings, services.engine, services.sessions, services.experiments
    )


AdminDep = Annotated[ExperimentAdmin, Depends(get_admin)]

NOT_FOUND: Responses = {
    404: error_response(
        "No experiment with this name.",
        "ExperimentNotFound",
        "experiment 'ranker-v2' does not exist; GET /v1/experiments lists them",
    )
}
BAD_NAME: Responses = {
    422: error_response(
        "The name breaks its rule.",
        "ValidationError",
        "name: must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
        "got 'ranker v2'",
    )
}
BAD_DEFINITION: Responses = {
    422: error_response(
        "The definition is invalid; `detail` names every problem (shares not summing to 100, "
        "repeated variant names, unknown model versions, negative blend weights, ...).",
        "ValidationError",
        "body: variant shares must sum to 100 (percent), got 90: control 50 + treatment 40",
    )
}
MALFORMED: Responses = {
    400: error_response(
        "The body is not valid JSON.",
        "MalformedJSON",
        "the request body is not valid JSON (Expecting property name enclosed in double quotes)",
    )
}
NAME_TAKEN: Responses = {
    409: error_response(
        "An experiment of this name exists.",
        "Conflict",
        "an experiment named 'ranker-v2' exists already (stopped); choose another name",
    )
}
CANNOT_START: Responses = {
    409: error_response(
        "Another experiment is running, or this one is running or stopped already.",
        "Conflict",
        "experiment 'ranker-v1' is running; stop it first (one experiment runs at a time, so "
        "every user sees one variant)",
    ),
    422: error_response(
        "A variant's model version cannot be loaded (or the name breaks its rule).",
        "InvalidInput",
        "variant 'treatment' cannot be served: model version '20261126T101500Z-a1b2c3' cannot "
        "be loaded: ...",
    ),
}
CANNOT_STOP: Responses = {
    409: error_response(
        "The experiment is not running.",
        "Conflict",
        "experiment 'ranker-v2' is draft; only a running experiment can be stopped",
    )
}


@router.post(
    "",
    status_code=201,
    response_model=ExperimentOut,
    responses={**AUTH_ERRORS, **MALFORMED, **BAD_DEFINITION, **NAME_TAKEN},
)
def create_experiment(body: ExperimentIn, admin: AdminDep) -> ExperimentOut:
    """Define an experiment as a draft; nothing changes for users until it is started."""
    return admin.create(body)


@router.get(
    "",
    response_model=ExperimentListOut,
    responses={
        **AUTH_ERRORS,
        422: error_response(
            "Unknown status.",
            "ValidationError",
            "status: Input should be 'draft', 'running' or 'stopped'",
        ),
    },
)
def list_experiments(
    admin: AdminDep,
    status: Annotated[
        ExperimentStatus | None,
        Query(description="Only experiments in this status.", examples=["running"]),
    ] = None,
) -> ExperimentListOut:
    """Every experiment, newest first."""
    return ExperimentListOut(experiments=admin.list_experiments(status))


@router.get(
    "/{name}",
    response_model=ExperimentOut,
    responses={**AUTH_ERRORS, **NOT_FOUND, **BAD_NAME},
)
def get_experiment(name: ExperimentNamePath, admin: AdminDep) -> ExperimentOut:
    """One experiment's definition and status."""
    return admin.get(name)


@router.post(
    "/{name}/start",
    response_model=ExperimentOut,
    responses={**AUTH_ERRORS, **NOT_FOUND, **CANNOT_START},
)
def start_experiment(name: ExperimentNamePath, admin: AdminDep) -> ExperimentOut:
    """Run a draft: users are assigned and exposures logged from now on."""
    return admin.start(name)


@router.post(
    "/{name}/stop",
    response_model=ExperimentOut,
    responses={**AUTH_ERRORS, **NOT_FOUND, **BAD_NAME, **CANNOT_STOP},
)
def stop_experiment(name: ExperimentNamePath, admin: AdminDep) -> ExperimentOut:
    """Stop a running experiment for good; users get the default again, results stay."""
    return admin.stop(name)


@router.get(
    "/{name}/results",
    response_model=ExperimentResultsOut,
    responses={**AUTH_ERRORS, **NOT_FOUND, **BAD_NAME},
)
def get_results(name: ExperimentNamePath, admin: AdminDep) -> ExperimentResultsOut:
    """Per variant users, exposures, clicks, conversions, CTR and conversion rate with 95%
    intervals; lift against the control with p-values; the sample-ratio check and a verdict."""
    return admin.results(name)
