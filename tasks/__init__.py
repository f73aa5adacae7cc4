"""Pipeline stages as Prefect tasks: resolve inputs -> call components -> write artifacts -> log -> manifest."""
