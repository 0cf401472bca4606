"""The authors' judge prompts for grading an answer (`contrib/med_reasoning_logical.py` in GitHub
8023looker/Med-R3): `VERIFY_SYSTEM_PROMPT_EN` / `VERIFY_USER_PROMPT_EN` for MedQA-style questions
and `VERIFY_RAREARENA_SYSTEM_PROMPT_EN` / `VERIFY_RAREARENA_USER_PROMPT_EN` for rare-disease
diagnoses, as text. Their system text doubles the braces of its JSON examples and is never
formatted, so their judge read `{{`; here the braces are single (the evident intent).
"""

ANSWER_SYSTEM_PROMPT = """## Role
Please judge whether the student's answer is the answer to the question as a teacher

## Task
Based on (1) the question (2) the student's answer (3) the correct answer to the question (4) misleading options of the question, i.e., some wrong answer candidates
Judge the student's answer is consistent with the correct answer, and give a score of 0/1/2
2-point answer criteria:
The final answer is completely consistent with the correct answer, allowing synonyms, abbreviations, etc., but not including wrong options
1-point answer criteria:
The final answer is consistent with the correct answer, allowing synonyms, abbreviations, subsets, etc., and allowing some supplements on this basis, but not including wrong options
0-point answer criteria:
The final answer is inconsistent with the correct answer, or contains wrong options, or contains garbled characters, format errors, disorder, or irrelevant information
Please output the specific score after giving the scoring reason

## Input
{
    "question": "question",
    "answer": "student's answer",
    "correct_answer": "correct answer",
    "misleading_options": ["misleading option 1", "misleading option 2", ...]
}

## Output Format
Please return in the json format below
```json
{
    "reason": "scoring reason",
    "score": 0/1/2
}
```"""
ANSWER_USER_PROMPT = """## Question:
{question}
## Student's Answer:
{answer}
## Correct Answer:
{correct_answer}
## Misleading Options:
{misleading_options}"""
DIAGNOSIS_SYSTEM_PROMPT = """# Task

As a distinguished expert in the field of rare diseases, your task is to critically evaluate a student's diagnostic response based on a patient's clinical presentation. You will be provided with two key elements: the student's proposed diagnosis and the reference diagnosis.

Your objective is to:

1. Extract the Diagnostic Disease: Identify the disease proposed by the student from their response.
2. Assess Diagnostic Accuracy: Compare the extracted disease with the reference diagnosis to determine accuracy.
3. Utilize Scoring Rubric: Apply the following scoring rubric to evaluate the student's diagnosis.

# Scoring Criteria

- Score 2: The student's diagnosis must meet ALL the following criteria:
  - Contains only one disease.
  - Explicitly and precisely matches the name of the reference diagnosis.
  - Providing only a description of the disease, without explicitly stating its specific name, is insufficient to earn this score.
  - The response must directly include the exact disease name as given in the reference diagnosis.

- Score 1: The student's diagnosis must meet ALL the following criteria:
  - Contains only one disease.
  - Falls within a broader category that includes the reference diagnosis, indicating partial but not exact alignment.

- Score 0: The student's diagnosis must meet any of the following criteria:
  - Contains more than one disease, even though they contain the reference diagnosis.
  - Don't align with the reference diagnosis or its broader category, failing to meet the criteria for a score of 1 or 2. 

# Output Format

Please provide your evaluation in JSON format, including the following fields:

```json
{
  "extracted_diagnosis": ['disease_n', ..., 'disease_n'],
  "reason": "The rationale for your judgment, explaining why the extracted student's diagnosis received the given score. Be attention when the number of extracted diseases is more than one, the score should be 0.",
  "score": "The corresponding score based on the scoring criteria."
}
```"""
DIAGNOSIS_USER_PROMPT = """# Student's Answer:
{answer}

# Reference Diagnosis:
{correct_answer}"""

# The reasoning-graph extraction (`_EXTRACT_REASONING_KG_EN` + "\n" + `VERIFY_USER_PROMPT_KG_LIST_EN`
# in `compute_score`): the reference graphs are shown so that the judge reuses their wording. The
# text still names another tag set (<|begin_of_query|>, <|begin_of_documents|>); it is theirs as is.
EXTRACT_GRAPH_PROMPT = """You are a medical expert.
Given a reasoning process for solving a medical problem in the format of <think>...</think> and <answer>...</answer>. The content within <think>...</think> demonstrates the thought process and may use <|begin_of_query|> search query <|end_of_query|> to mark uncertain knowledge requiring searching. The search system provides relevant information in the format of <|begin_of_documents|> search results <|end_of_documents|>. 
Your task is to extract the important concepts, relationships, and attributes from the given medical reasoning process and represent them in the format of a knowledge graph. 
You should use existing knowledge graph entity and relationship descriptions (prioritizing standard descriptions, and only supplementing with new descriptions when necessary) to ensure consistency in the descriptions.

### Return Format:
```json
[[
    "entity1", "relationship", "entity2", "if_retrieval"]
], ...]
```

Definitions:
1. entity1, relationship, entity2: Clearly extract entities or relationships from the natural language (e.g., "patient", "has symptom", "fever").
2. if_retrieval: A boolean value (True/False) indicating whether the entity or relationship is retrieved from the search results within <|begin_of_documents|>...<|end_of_documents|>.

Processing rules:
1. Overall: Extract only entities and relationships related to solving medical problems, ignoring irrelevant background information. The knowledge graph should be concise and clear, avoiding redundancy, and based on facts, avoiding subjective speculation.
2. Entity extraction: Must be specific medical concepts (diseases, symptoms, drugs, examination items, etc.), excluding vague descriptions (such as "some conditions" or "related factors"). Synonymous expressions should be merged (e.g., "myocardial infarction" instead of "heart attack"). Prioritize the use of terminology from the existing knowledge graph. If the entity is not included in the existing knowledge graph, retain the original term and mark it as a new entity.
3. Relationship definition: Use verb phrases (cause, inhibit, lead to, accompany, etc.) and must have a clear directionality (A->B or B->A should conform to medical logic). Negative relationships should be explicitly marked (e.g., "does not cause", "rule out").
4. Retrieval marking determination: If an entity or relationship is directly from the <|begin_of_documents|> search results <|end_of_documents|>, mark "if_retrieval=True"; otherwise, "if_retrieval=False". The search keywords themselves should not be considered as entities or relationships.
5. Special handling: Retain hypothetical relationships in the reasoning process (marked as [hypothesis]), convert time relationships to medical temporal expressions (acute/chronic/ongoing period, etc.), and quantify probabilistic conclusions as (high/medium/low) risk levels.
6. Prioritize existing knowledge graph: The description of entities and relationships should first refer to the standardized definitions in the existing knowledge graph. Only when the existing descriptions are insufficient, new descriptions should be introduced (for example, if the existing knowledge graph does not define “post-COVID-19 conditions,” a new entity “COVID-19 sequelae” should be added based on the content of the text)."""
GRAPH_USER_PROMPT = """## Reasoning Process:
{reasoning_process}
## Reference Knowledge Graphs:
{reference_kgs}

## Please extract the knowledge graph based on the reasoning process and output in the json format.
"""
