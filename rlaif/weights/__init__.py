"""The weight path from the learner to the engines: bucket plan and digest, the broadcast group, the engine side."""
