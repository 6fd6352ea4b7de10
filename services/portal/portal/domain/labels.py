"""French words for every code the portal shows. Pure data: a code never reaches a page bare
(``label`` falls back to the code only for a value added to a contract after this table)."""

from __future__ import annotations

from collections.abc import Mapping

from notifications.domain.rejection_reasons import EXPLANATIONS

SERVICES = {
    "initial_assessment": "Évaluation initiale",
    "responsibility_course": "Stage de responsabilisation",
    "discussion_group": "Groupe de parole",
    "psychological_followup": "Suivi psychologique",
    "psychiatric_followup": "Suivi psychiatrique",
    "addiction_care": "Soins en addictologie",
    "social_support": "Accompagnement social",
    "employment_support": "Accompagnement vers l'emploi",
    "eviction_housing": "Hébergement (éviction du domicile)",
    "probationary_placement": "Placement probatoire",
    "helpline_orientation": "Écoute et orientation",
}
FRAMES = {
    "alternative_orientation": "Alternative aux poursuites : orientation (art. 41-1 2° CPP)",
    "alternative_eviction": "Alternative aux poursuites : éviction du domicile (art. 41-1 6° CPP)",
    "composition_penale": "Composition pénale (art. 41-2 CPP)",
    "crpc": "Comparution sur reconnaissance préalable de culpabilité",
    "controle_judiciaire": "Contrôle judiciaire (art. 138 17° CPP)",
    "cjpp": "Contrôle judiciaire avec placement probatoire (art. 138 18° CPP)",
    "sursis_probatoire": "Sursis probatoire (art. 132-45 CP)",
    "responsibility_course_penalty": "Peine de stage de responsabilisation (art. 131-5-1 CP)",
    "sentence_adjustment": "Aménagement de peine (JAP)",
    "protection_order": "Ordonnance de protection (JAF)",
    "voluntary": "Démarche volontaire",
}
URGENCY = {"standard": "Normale", "urgent": "Urgente"}
LANGUAGES = {
    "fr": "français",
    "en": "anglais",
    "ar": "arabe",
    "es": "espagnol",
    "pt": "portugais",
    "it": "italien",
    "de": "allemand",
    "tr": "turc",
    "ro": "roumain",
    "ru": "russe",
    "uk": "ukrainien",
    "pl": "polonais",
    "zh": "chinois",
    "vi": "vietnamien",
    "fa": "persan",
    "ps": "pachto",
    "ta": "tamoul",
    "wo": "wolof",
    "bm": "bambara",
    "sq": "albanais",
    "ka": "géorgien",
    "hy": "arménien",
    "ber": "berbère",
}
STATUS = {
    "received": "Reçue, en cours d'orientation",
    "offered": "Proposée à un centre",
    "placed": "Prise en charge par le centre",
    "waitlisted": "En liste d'attente",
    "unroutable": "Sans site possible (coordinateur alerté)",
    "escalated": "Confiée à un coordinateur",
    "withdrawn": "Retirée par le prescripteur",
    "completed": "Parcours terminé",
    "terminated": "Parcours interrompu",
    "rejected": "Refusée à la réception",
}
DECLINE_REASONS = {
    "no_capacity": "Plus de place disponible",
    "not_eligible": "La personne ne relève pas de nos critères d'accueil",
    "victim_site_conflict": "Incompatibilité avec la victime (même site ou même lieu)",
    "other": "Autre motif",
}
PATH_REPORTS = {
    "appointment_scheduled": "Rendez-vous fixé",
    "attended": "Présence constatée",
    "no_show": "Absence constatée",
    "module_completed": "Module terminé",
    "path_completed": "Parcours terminé",
    "path_terminated": "Parcours interrompu",
    "breach_suspected": "Manquement suspecté à l'obligation",
}
TERMINATION_REASONS = {
    "completed_early": "Achevé avant le terme prévu",
    "excluded": "Exclusion par le centre",
    "moved_away": "Déménagement",
    "refused": "Refus de la personne",
    "other": "Autre motif",
}
ESCALATION_REASONS = {
    "attempts_exhausted": "plusieurs sites ont décliné ou n'ont pas répondu",
    "no_feasible_site": "aucun site ne peut accueillir la personne en l'état",
    "urgent_no_place": "orientation urgente sans place disponible à portée",
}
UNROUTABLE_REASONS = {
    "no_site_offers_services": "aucun site ne propose les services demandés",
    "all_sites_excluded": "tous les sites possibles sont exclus par les interdictions",
    "territory_not_served": "le territoire n'est couvert par aucun centre",
}
# Why intake refused what a prescriber sent: the same French words as the prescribers' e-mails
# (notifications' table, one source, so the page and the e-mail never say two things).
REJECTION_REASONS = {
    str(reason): f"{label[0].upper()}{label[1:]} : {advice}"
    for reason, (label, advice) in EXPLANATIONS.items()
}
ROLES = {"centre": "Centre", "prescriber": "Prescripteur", "operator": "Opérateur"}


def label(table: Mapping[str, str], code: str | None) -> str:
    if code is None:
        return ""
    return table.get(code, code)


def language(code: str | None) -> str:
    if not code:
        return ""
    name = LANGUAGES.get(code)
    return f"{name} ({code})" if name else code
