"""TeamService: the team templates, built-in and the user's own."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from klaudio import validate
from klaudio.rpc.v1 import teams_pb2, teams_pb2_grpc
from klaudiod.scheduler import Scheduler
from klaudiod.services import convert
from klaudiod.services.errors import mapped

Context = grpc.aio.ServicerContext[Any, Any]


class TeamService(teams_pb2_grpc.TeamServiceServicer):
    """Lists, shows, adds and removes team templates."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._teams = scheduler.teams

    @mapped
    async def ListTeams(
        self, request: teams_pb2.ListTeamsRequest, context: Context
    ) -> teams_pb2.ListTeamsResponse:
        found = await asyncio.to_thread(self._teams.list)
        invalid = await asyncio.to_thread(self._teams.invalid)
        return teams_pb2.ListTeamsResponse(
            teams=[convert.team(team, source) for team, source in found], invalid=invalid
        )

    @mapped
    async def GetTeam(
        self, request: teams_pb2.GetTeamRequest, context: Context
    ) -> teams_pb2.GetTeamResponse:
        name = validate.utf8(request.name, "name")
        team = await asyncio.to_thread(self._teams.get, name)
        text = await asyncio.to_thread(self._teams.text, name)
        sources = dict((t.name, s) for t, s in await asyncio.to_thread(self._teams.list))
        return teams_pb2.GetTeamResponse(team=convert.team(team, sources.get(team.name, ""), text))

    @mapped
    async def AddTeam(
        self, request: teams_pb2.AddTeamRequest, context: Context
    ) -> teams_pb2.AddTeamResponse:
        text = validate.prompt(request.yaml, "the team")
        team = await asyncio.to_thread(self._teams.add, text, request.replace)
        sources = dict((t.name, s) for t, s in await asyncio.to_thread(self._teams.list))
        return teams_pb2.AddTeamResponse(
            team=convert.team(team, sources.get(team.name, "user"), text)
        )

    @mapped
    async def RemoveTeam(
        self, request: teams_pb2.RemoveTeamRequest, context: Context
    ) -> teams_pb2.RemoveTeamResponse:
        await asyncio.to_thread(self._teams.remove, validate.utf8(request.name, "name"))
        return teams_pb2.RemoveTeamResponse()
