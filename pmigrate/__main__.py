from pmigrate.cli import run

run()
