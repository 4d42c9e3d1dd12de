"""PlanService: answering the planner's questions, replacing a plan, planning again."""

from __future__ import annotations

from typing import Any

import grpc
import yaml

from klaudio import validate
from klaudio.rpc.v1 import plans_pb2, plans_pb2_grpc, tasks_pb2
from klaudiod.db import Db
from klaudiod.plan import PlanProblems
from klaudiod.scheduler import Scheduler
from klaudiod.services import convert
from klaudiod.services.errors import mapped

Context = grpc.aio.ServicerContext[Any, Any]


class PlanService(plans_pb2_grpc.PlanServiceServicer):
    """The planner's questions and the task's plan."""

    def __init__(self, scheduler: Scheduler, db: Db) -> None:
        self._scheduler = scheduler
        self._db = db

    async def _resolve(self, task_id: str) -> str:
        return await self._db.call(self._db.store.resolve, validate.utf8(task_id, "task_id"))

    @mapped
    async def AnswerQuestions(
        self, request: plans_pb2.AnswerQuestionsRequest, context: Context
    ) -> plans_pb2.AnswerQuestionsResponse:
        answers = {
            validate.utf8(key, "question id"): validate.prompt(text, f"the answer to {key!r}")
            for key, text in request.answers.items()
        }
        task_id = await self._resolve(request.task_id)
        answered = await self._scheduler.answer(task_id, answers)
        return plans_pb2.AnswerQuestionsResponse(task=convert.detail(answered))

    @mapped
    async def SetPlan(
        self, request: plans_pb2.SetPlanRequest, context: Context
    ) -> plans_pb2.SetPlanResponse:
        data = _from_text(request.text) if request.text else _from_message(request.plan)
        task_id = await self._resolve(request.task_id)
        changed = await self._scheduler.set_plan(task_id, data, request.based_on_version)
        return plans_pb2.SetPlanResponse(task=convert.detail(changed))

    @mapped
    async def ReplanTask(
        self, request: plans_pb2.ReplanTaskRequest, context: Context
    ) -> plans_pb2.ReplanTaskResponse:
        extra = validate.utf8(request.context, "context")
        task_id = await self._resolve(request.task_id)
        return plans_pb2.ReplanTaskResponse(
            task=convert.detail(await self._scheduler.replan(task_id, extra))
        )


def _from_text(text: str) -> Any:
    """A plan a person wrote, as YAML or JSON; a syntax error is a problem with its line."""
    validate.prompt(text, "the plan")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PlanProblems([f"{where}not valid YAML: {problem}"]) from None


def _from_message(message: tasks_pb2.Plan) -> dict[str, Any]:
    return {
        "analysis": message.analysis,
        "strategy": message.strategy,
        "notes": message.notes,
        "subtasks": [
            {
                "id": s.id,
                "name": s.name,
                "description": s.description,
                "prompt": s.prompt,
                "depends_on": list(s.depends_on),
                "files_involved": list(s.files_involved),
                "complexity": s.complexity,
                "agent_role": s.agent_role,
            }
            for s in message.subtasks
        ],
    }
