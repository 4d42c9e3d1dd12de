"""The planning phase: run (or resume) the planner agent and store its plan or questions."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from klaudio.errors import InvalidArgument
from klaudiod import agent as agentlib
from klaudiod import plan, settings, states, teams
from klaudiod.agent import Outcome, outcome
from klaudiod.executor import STRATEGIES_WITH_EXECUTOR, Interruption
from klaudiod.kit import Kit
from klaudiod.records import AgentRecord, TaskRecord
from klaudiod.runner import Stop

PLANNER = plan.PLANNER_AGENT


class Planning:
    """Takes a task in state planning to planned (or approved), awaiting answers, or failed."""

    def __init__(self, kit: Kit) -> None:
        self._kit = kit

    async def plan(self, task: TaskRecord, stop: Stop) -> tuple[str, str, Interruption | None]:
        """Run the planner to its end; return the next state, why, and what interrupted it.

        The next state is planning again when the planner was stopped (the driver pauses).
        """
        kit = self._kit
        agent = await kit.db.call(kit.store.find_agent, task.id, PLANNER)
        result = await self._run(task, agent, stop)
        if result is None:
            return states.PLANNING, "stopped", None
        if result.interrupted:
            return states.PLANNING, result.reason, Interruption.of(result)
        next_state, reason = await self._judge(task, result)
        return next_state, reason, None

    async def _judge(self, task: TaskRecord, result: Outcome) -> tuple[str, str]:
        kit = self._kit
        if not result.ok:
            return states.FAILED, f"planner failed: {result.reason}"
        setup = settings.of(task, kit.config)
        try:
            parsed = plan.parse(result.structured, teams.rules(setup.team) if setup.team else None)
            if isinstance(parsed, plan.Plan) and parsed.strategy not in STRATEGIES_WITH_EXECUTOR:
                raise InvalidArgument(
                    f"the {parsed.strategy!r} strategy is not supported yet; plan as 'dag'"
                )
        except InvalidArgument as exc:
            return states.FAILED, f"invalid plan: {exc}"
        if isinstance(parsed, plan.Questions):
            asked = await kit.db.call(kit.store.question_rounds, task.id)
            if asked >= setup.max_question_rounds:
                return states.FAILED, (
                    f"the planner asked questions again after {asked} round(s), the most "
                    f"planning.max_question_rounds allows; it must plan"
                )
            event = await kit.db.call(kit.store.save_questions, task.id, parsed.questions)
            kit.bus.publish([event])
            return states.AWAITING_ANSWERS, "the planner has questions"
        _, event = await kit.db.call(kit.store.save_plan, task.id, parsed)
        kit.bus.publish([event])
        return states.PLANNED, ""

    async def _prompt(self, task: TaskRecord) -> str:
        """The planner's first prompt: the task, its team's brief, the repository at a glance."""
        setup = settings.of(task, self._kit.config)
        brief = teams.planner_brief(setup.team) if setup.team else ""
        memory = await self._kit.repository(task)
        context = task.context
        if task.inputs:
            given = "\n".join(f"- /workspace/input/{name}" for name in task.inputs)
            context = f"Files given with the task (in /workspace/input/):\n{given}\n" + context
        rule = agentlib.questions_rule(setup.max_question_rounds)
        return agentlib.planner_prompt(task.prompt, context, brief, memory, rule)

    async def _run(self, task: TaskRecord, agent: AgentRecord | None, stop: Stop) -> Outcome | None:
        """The planner's outcome: run it (or adopt or resume it); None when it was stopped."""
        kit = self._kit
        if agent is not None:
            run = await kit.db.call(kit.store.live_run, agent.id)
            last = run or await kit.db.call(kit.store.latest_run, agent.id)
            entered = await kit.db.call(kit.store.entered, task.id, states.PLANNING)
            ended = last.ended_at if last is not None and run is None else None
            if last is not None and last.state != states.RUN_STOPPED and (ended or 0) >= entered:
                # It ended after planning began, then the daemon restarted: judge it again.
                return await asyncio.to_thread(
                    outcome, Path(last.run_dir) / "out.jsonl", last.exit_code, False, True
                )
        else:
            run = None
            agent = await kit.db.call(
                kit.store.create_agent,
                task.id,
                PLANNER,
                PLANNER,
                None,
                str(uuid.uuid4()),
                str(kit.files(task.id).home(PLANNER)),
            )
        async with kit.slots:
            if run is None:
                if stop.is_set():
                    return None
                fresh = await self._prompt(task)
                run = await kit.new_run(task, agent, fresh, task.planner_message)
            result, final = await kit.runner.run(task, agent, run, planner=True, stop=stop)
        return None if final == states.RUN_STOPPED and not result.interrupted else result
