"""The stop engine: the run and its bounds, the plan, each guest's chain of actions (actions/, one module each), the
wait for guests going off."""
